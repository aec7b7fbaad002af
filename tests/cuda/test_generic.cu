// More generic algorithms instantiated on device views (value loss, KL penalty and KL in the
// reward, ReMax, GRPO process supervision, token log-probs and full KL from logits), each against
// the same call on the CPU in double with the same fp32 inputs (1e-6 relative to the data's scale).
#include "cuda_test_util.cuh"

#include <rlcore/backend/cuda/logits.cuh>

#include <rlcore/advantage/all.hpp>
#include <rlcore/objective/kl_penalty.hpp>
#include <rlcore/objective/logits.hpp>
#include <rlcore/objective/value_loss.hpp>

#include <cmath>
#include <cstdint>

using rlcore::device_space;
using rlcore::index_t;
using namespace rlcore_test;

namespace {

rlcore::device_context ctx{};

constexpr index_t rows = 24;
constexpr index_t cols = 333;

std::vector<double> dbl(const std::vector<float>& x) {
  return {x.begin(), x.end()};
}

template <class T>
auto dm(const thrust::device_vector<T>& d, index_t r = rows, index_t c = cols) {
  return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(d.data()), r, c);
}
template <class T>
auto dm(thrust::device_vector<T>& d, index_t r = rows, index_t c = cols) {
  return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(d.data()), r, c);
}
template <class T>
auto hm(const std::vector<T>& h, index_t r = rows, index_t c = cols) {
  return rlcore::make_matrix_view(h.data(), r, c);
}
template <class T>
auto hm(std::vector<T>& h, index_t r = rows, index_t c = cols) {
  return rlcore::make_matrix_view(h.data(), r, c);
}

struct fixture {
  std::vector<std::uint8_t> mask = bernoulli<std::uint8_t>(rows * cols, 0.8, 1);
  std::vector<float> a = uniform<float>(rows * cols, -3, -0.1, 2);
  std::vector<float> b = uniform<float>(rows * cols, -3, -0.1, 3);
  std::vector<float> c = uniform<float>(rows * cols, -1, 1, 4);
  thrust::device_vector<std::uint8_t> dmask = to_device(mask);
  thrust::device_vector<float> da = to_device(a), db = to_device(b), dc = to_device(c);
  rlcore::padded_layout<std::uint8_t, device_space> dlayout = rlcore::cuda::padded(dm(dmask));
  rlcore::padded_layout<std::uint8_t, rlcore::host_space> hlayout = rlcore::padded(hm(mask));
};

} // namespace

TEST_CASE("value loss and KL penalty on the GPU match the CPU") {
  fixture f;
  thrust::device_vector<float> dgrad(rows * cols);
  std::vector<double> hgrad(rows * cols);
  auto dg = dm(dgrad);
  auto hg = hm(hgrad);
  const auto ha = dbl(f.a), hb = dbl(f.b), hc = dbl(f.c);

  const auto dv = rlcore::value_loss(f.dlayout, dm(f.da), dm(f.db), dm(f.dc), dg, {}, ctx);
  const auto hv = rlcore::value_loss(f.hlayout, hm(ha), hm(hb), hm(hc), hg);
  CHECK(close(dv.loss, hv.loss, 1e-6));
  CHECK(dv.clip_fraction == hv.clip_fraction);
  CHECK(scaled_error(to_host(dgrad), hgrad) < 1e-6);

  const auto dk = rlcore::kl_penalty_loss(f.dlayout, dm(f.da), dm(f.db), dg, {}, ctx);
  const auto hk = rlcore::kl_penalty_loss(f.hlayout, hm(ha), hm(hb), hg);
  CHECK(close(dk.loss, hk.loss, 1e-6));
  CHECK(close(dk.kl_mean, hk.kl_mean, 1e-6));
  CHECK(scaled_error(to_host(dgrad), hgrad) < 1e-6);

  thrust::device_vector<float> drew = f.dc;
  std::vector<double> hrew = hc;
  auto dr = dm(drew);
  auto hr = hm(hrew);
  const double dmean = rlcore::apply_kl_to_rewards(f.dlayout, dr, dm(f.da), dm(f.db), 0.05,
                                                   rlcore::kl_estimator::k3, {}, ctx);
  const double hmean =
      rlcore::apply_kl_to_rewards(f.hlayout, hr, hm(ha), hm(hb), 0.05, rlcore::kl_estimator::k3);
  CHECK(close(dmean, hmean, 1e-6));
  CHECK(scaled_error(to_host(drew), hrew) < 1e-6);
}

TEST_CASE("ReMax and GRPO process supervision on the GPU match the CPU") {
  fixture f;
  const auto hc = dbl(f.c);
  thrust::device_vector<float> dout(rows * cols);
  std::vector<double> hout(rows * cols);
  auto d_out = dm(dout);
  auto h_out = hm(hout);
  const auto base = uniform<float>(rows, -1, 1, 9);
  const auto dbase = to_device(base);
  const auto hbase = dbl(base);
  rlcore::remax_advantages(f.dlayout, dm(f.dc), dbase, d_out, {}, ctx);
  rlcore::remax_advantages(f.hlayout, hm(hc), hbase, h_out);
  CHECK(scaled_error(to_host(dout), hout) < 1e-6);

  const auto ends = bernoulli<float>(rows * cols, 0.05, 11);
  const auto dends = to_device(ends);
  const auto hends = dbl(ends);
  rlcore::grpo_process_advantages(f.dlayout, dm(f.dc), dm(dends), rlcore::uniform_groups{4}, d_out,
                                  {}, ctx);
  rlcore::grpo_process_advantages(f.hlayout, hm(hc), hm(hends), rlcore::uniform_groups{4}, h_out);
  CHECK(scaled_error(to_host(dout), hout) < 1e-6);
}

TEST_CASE("generic token log-probs and full KL from fp32 logits on the GPU") {
  const index_t n = 3;
  const index_t t_len = 4;
  const index_t vocab = 3001;
  const index_t slots = n * t_len;
  const auto z = uniform<float>(slots * vocab, -4, 4, 21);
  const auto zr = uniform<float>(slots * vocab, -4, 4, 22);
  std::vector<int> ids(slots);
  for (index_t r = 0; r < slots; ++r) {
    ids[r] = static_cast<int>((r * 977) % vocab);
  }
  std::vector<std::uint8_t> mask{1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1};
  const auto dz = to_device(z);
  const auto dzr = to_device(zr);
  const auto dids = to_device(ids);
  const auto dmask = to_device(mask);
  const auto dlayout = rlcore::cuda::padded(dm(dmask, n, t_len));
  thrust::device_vector<float> dlp(slots), dkl(slots), dlp_kernel(slots);
  auto dlpv = dm(dlp, n, t_len);
  auto dklv = dm(dkl, n, t_len);
  rlcore::token_log_probs(dlayout, dm(dz, slots, vocab), dm(dids, n, t_len), dlpv, {}, ctx);
  rlcore::full_kl_from_logits(dlayout, dm(dz, slots, vocab), dm(dzr, slots, vocab), dklv, {}, ctx);

  const auto hz = dbl(z);
  const auto hzr = dbl(zr);
  const auto hlayout = rlcore::padded(hm(mask, n, t_len));
  std::vector<double> hlp(slots), hkl(slots);
  auto hlpv = hm(hlp, n, t_len);
  auto hklv = hm(hkl, n, t_len);
  rlcore::token_log_probs(hlayout, hm(hz, slots, vocab), hm(ids, n, t_len), hlpv);
  rlcore::full_kl_from_logits(hlayout, hm(hz, slots, vocab), hm(hzr, slots, vocab), hklv);
  CHECK(scaled_error(to_host(dlp), hlp) < 1e-6);
  CHECK(scaled_error(to_host(dkl), hkl) < 1e-6);

  // The fused kernel gives the generic algorithm's log-probs (masked slots 0 in both).
  rlcore::cuda::token_log_probs<float, int>(
      rlcore::matrix_view<const float, device_space>{thrust::raw_pointer_cast(dz.data()), slots,
                                                     vocab, vocab, 1},
      thrust::raw_pointer_cast(dids.data()), thrust::raw_pointer_cast(dmask.data()),
      thrust::raw_pointer_cast(dlp_kernel.data()), nullptr, 1.0, ctx);
  CHECK(scaled_error(to_host(dlp_kernel), hlp) < 1e-6);
}

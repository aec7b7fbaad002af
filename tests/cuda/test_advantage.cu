// The generic advantage estimators (advantage/*.hpp) instantiated on device views through
// execution_context<device_space>: GPU (fp32 inputs) vs CPU (double, the same fp32 values) to
// 1e-6 relative, bitwise determinism, and the contract's pitfalls (identical rewards give exactly
// 0, groups of one, interior masks, all-masked rows, packed = padded).
#include "cuda_test_util.cuh"

#include <rlcore/advantage/all.hpp>

#include <cmath>
#include <cstdint>

using rlcore::device_space;
using rlcore::index_t;
using namespace rlcore_test;

namespace {

rlcore::device_context ctx{};

/// A padded batch: an N x T 0/1 mask with interior holes and one all-masked row, per-token
/// rewards and values (fp32 values, also held as double for the CPU reference).
struct batch {
  index_t rows;
  index_t cols;
  std::vector<std::uint8_t> mask;
  std::vector<float> rewards;
  std::vector<float> values;

  batch(index_t n, index_t t, unsigned seed)
      : rows(n), cols(t), mask(bernoulli<std::uint8_t>(n * t, 0.85, seed)),
        rewards(uniform<float>(n * t, -1.0, 1.0, seed + 1)),
        values(uniform<float>(n * t, -2.0, 2.0, seed + 2)) {
    for (index_t k = 0; k < t; ++k) {
      mask[1 * t + k] = 0; // row 1 all masked
    }
  }
  auto host_layout() const {
    return rlcore::padded(rlcore::make_matrix_view(mask.data(), rows, cols));
  }
};

/// max_k |a_k - b_k| / max(1, max_k |b_k|): agreement relative to the data's scale.
double relative_error(const std::vector<float>& device, const std::vector<double>& host) {
  double worst = 0;
  double scale = 1;
  for (double v : host) {
    scale = std::max(scale, std::abs(v));
  }
  for (std::size_t k = 0; k < host.size(); ++k) {
    worst = std::max(worst, std::abs(double(device[k]) - host[k]));
  }
  return worst / scale;
}

} // namespace

TEST_CASE("GAE and returns on the GPU match the CPU (padded, interior masks), bitwise repeatable") {
  const batch b(64, 3000, 101); // rows longer than one scan tile
  const auto dmask = to_device(b.mask);
  const auto dr = to_device(b.rewards);
  const auto dv = to_device(b.values);
  thrust::device_vector<float> da(b.rows * b.cols, -5.0f);
  thrust::device_vector<float> dret(b.rows * b.cols, -5.0f);
  const auto layout = rlcore::cuda::padded(dmat(dmask, b.rows, b.cols));
  const rlcore::gae_options options{0.99, 0.95};
  auto a_view = dmat(da, b.rows, b.cols);
  auto ret_view = dmat(dret, b.rows, b.cols);
  rlcore::gae_advantages(layout, dmat(dr, b.rows, b.cols), dmat(dv, b.rows, b.cols), a_view,
                         ret_view, options, ctx);

  const auto hr = as_double(b.rewards);
  const auto hv = as_double(b.values);
  std::vector<double> ha(b.rows * b.cols);
  std::vector<double> hret(b.rows * b.cols);
  auto ha_view = rlcore::make_matrix_view(ha.data(), b.rows, b.cols);
  auto hret_view = rlcore::make_matrix_view(hret.data(), b.rows, b.cols);
  rlcore::gae_advantages(b.host_layout(), rlcore::make_matrix_view(hr.data(), b.rows, b.cols),
                         rlcore::make_matrix_view(hv.data(), b.rows, b.cols), ha_view, hret_view,
                         options);
  const auto a1 = to_host(da);
  CHECK(relative_error(a1, ha) < 1e-6);
  CHECK(relative_error(to_host(dret), hret) < 1e-6);
  for (index_t t = 0; t < b.cols; ++t) {
    CHECK(a1[1 * b.cols + t] == 0.0f); // all-masked row: exactly 0
  }
  thrust::device_vector<float> da2(b.rows * b.cols, 7.0f);
  auto a2_view = dmat(da2, b.rows, b.cols);
  rlcore::gae_advantages(layout, dmat(dr, b.rows, b.cols), dmat(dv, b.rows, b.cols), a2_view,
                         ret_view, options, ctx);
  CHECK(bitwise_equal(a1, to_host(da2)));

  // With whitening (two-pass moments through ctx.reduce_tokens).
  const rlcore::gae_options whitened{0.99, 0.95, true};
  rlcore::gae_advantages(layout, dmat(dr, b.rows, b.cols), dmat(dv, b.rows, b.cols), a_view,
                         ret_view, whitened, ctx);
  rlcore::gae_advantages(b.host_layout(), rlcore::make_matrix_view(hr.data(), b.rows, b.cols),
                         rlcore::make_matrix_view(hv.data(), b.rows, b.cols), ha_view, hret_view,
                         whitened);
  CHECK(relative_error(to_host(da), ha) < 1e-6);
}

TEST_CASE("GAE on a packed batch equals GAE on the padded batch") {
  // Rows of lengths 5, 0, 2100, 1 packed back to back; the padded twin has T = 2100.
  const std::vector<index_t> lengths{5, 0, 2100, 1};
  const index_t cols = 2100;
  std::vector<index_t> offsets{0};
  for (index_t len : lengths) {
    offsets.push_back(offsets.back() + len);
  }
  const index_t total = offsets.back();
  const auto flat_r = uniform<float>(total, -1, 1, 7);
  const auto flat_v = uniform<float>(total, -1, 1, 8);
  const auto flat_m = bernoulli<float>(total, 0.8, 9);
  std::vector<float> pr(4 * cols, 0.0f);
  std::vector<float> pv(4 * cols, 0.0f);
  std::vector<float> pm(4 * cols, 0.0f);
  for (int i = 0; i < 4; ++i) {
    for (index_t t = 0; t < lengths[i]; ++t) {
      pr[i * cols + t] = flat_r[offsets[i] + t];
      pv[i * cols + t] = flat_v[offsets[i] + t];
      pm[i * cols + t] = flat_m[offsets[i] + t];
    }
  }
  const auto doff = to_device(offsets);
  const auto dfr = to_device(flat_r);
  const auto dfv = to_device(flat_v);
  const auto dfm = to_device(flat_m);
  thrust::device_vector<float> fa(total);
  thrust::device_vector<float> fret(total);
  const auto packed = rlcore::cuda::packed(doff, dfm);
  rlcore::gae_advantages(packed, dfr, dfv, fa, fret, rlcore::gae_options{0.9, 0.8}, ctx);

  const auto dpr = to_device(pr);
  const auto dpv = to_device(pv);
  const auto dpm = to_device(pm);
  thrust::device_vector<float> pa(4 * cols);
  thrust::device_vector<float> pret(4 * cols);
  auto pa_view = dmat(pa, 4, cols);
  auto pret_view = dmat(pret, 4, cols);
  rlcore::gae_advantages(rlcore::cuda::padded(dmat(dpm, 4, cols)), dmat(dpr, 4, cols),
                         dmat(dpv, 4, cols), pa_view, pret_view, rlcore::gae_options{0.9, 0.8},
                         ctx);
  const auto a_flat = to_host(fa);
  const auto a_pad = to_host(pa);
  bool same = true;
  for (int i = 0; i < 4; ++i) {
    for (index_t t = 0; t < lengths[i]; ++t) {
      same = same && a_flat[offsets[i] + t] == a_pad[i * cols + t];
    }
  }
  CHECK(same); // same scan over the same row: bitwise equal
}

TEST_CASE("GRPO, RLOO, OPO, pass@k on the GPU match the CPU; identical rewards give exactly 0") {
  const index_t rows = 48;
  const index_t cols = 40;
  const index_t group = 4;
  const batch b(rows, cols, 202);
  auto scores = uniform<float>(rows, 0.0, 1.0, 17);
  for (int k = 0; k < group; ++k) {
    scores[8 + k] = 0.3f; // group 2: identical rewards (0.3 is not exact in binary)
  }
  const auto dscores = to_device(scores);
  const auto hscores = as_double(scores);
  const auto dmask = to_device(b.mask);
  const auto dlayout = rlcore::cuda::padded(dmat(dmask, rows, cols));
  const auto hlayout = b.host_layout();
  thrust::device_vector<float> dadv(rows * cols, -3.0f);
  std::vector<double> hadv(rows * cols);
  auto dadv_view = dmat(dadv, rows, cols);
  auto hadv_view = rlcore::make_matrix_view(hadv.data(), rows, cols);
  const rlcore::uniform_groups groups{group};

  SUBCASE("GRPO outcome") {
    const auto ds = rlcore::grpo_outcome_advantages(dlayout, dscores, groups, dadv_view, {}, ctx);
    const auto hs = rlcore::grpo_outcome_advantages(hlayout, hscores, groups, hadv_view);
    const auto a = to_host(dadv);
    CHECK(relative_error(a, hadv) < 1e-6);
    CHECK(ds.num_groups == hs.num_groups);
    CHECK(ds.zero_spread_fraction == hs.zero_spread_fraction);
    CHECK(ds.zero_spread_fraction == doctest::Approx(1.0 / 12));
    CHECK(close(ds.advantage_std, hs.advantage_std, 1e-6));
    for (index_t i = 8; i < 12; ++i) {
      for (index_t t = 0; t < cols; ++t) {
        CHECK(a[i * cols + t] == 0.0f);
      }
    }
  }
  SUBCASE("RLOO") {
    (void)rlcore::rloo_advantages(dlayout, dscores, groups, dadv_view, ctx);
    (void)rlcore::rloo_advantages(hlayout, hscores, groups, hadv_view);
    CHECK(relative_error(to_host(dadv), hadv) < 1e-6);
  }
  SUBCASE("OPO") {
    (void)rlcore::opo_advantages(dlayout, dscores, groups, dadv_view, ctx);
    (void)rlcore::opo_advantages(hlayout, hscores, groups, hadv_view);
    CHECK(relative_error(to_host(dadv), hadv) < 1e-6);
  }
  SUBCASE("pass@k with device offset groups (sizes 4, 0, 20, 24)") {
    const auto doffs = to_device(std::vector<int>{0, 4, 4, 24, 48});
    const std::vector<int> hoffs{0, 4, 4, 24, 48};
    (void)rlcore::pass_at_k_advantages(dlayout, dscores, rlcore::cuda::group_offsets(doffs),
                                       dadv_view, {}, ctx);
    (void)rlcore::pass_at_k_advantages(hlayout, hscores, rlcore::group_offsets(hoffs), hadv_view);
    CHECK(relative_error(to_host(dadv), hadv) < 1e-6);
  }
  SUBCASE("groups of one give 0") {
    (void)rlcore::grpo_outcome_advantages(dlayout, dscores, rlcore::uniform_groups{1}, dadv_view,
                                          {}, ctx);
    const auto a = to_host(dadv);
    CHECK(std::all_of(a.begin(), a.end(), [](float x) { return x == 0.0f; }));
  }
}

TEST_CASE("REINFORCE++ (and its baseline form) and whitening on the GPU match the CPU") {
  const batch b(32, 700, 303);
  const auto dmask = to_device(b.mask);
  const auto dr = to_device(b.rewards);
  const auto hr = as_double(b.rewards);
  const auto dlayout = rlcore::cuda::padded(dmat(dmask, b.rows, b.cols));
  const auto hlayout = b.host_layout();
  thrust::device_vector<float> da(b.rows * b.cols);
  thrust::device_vector<float> dret(b.rows * b.cols);
  std::vector<double> ha(b.rows * b.cols);
  std::vector<double> hret(b.rows * b.cols);
  auto da_view = dmat(da, b.rows, b.cols);
  auto dret_view = dmat(dret, b.rows, b.cols);
  auto ha_view = rlcore::make_matrix_view(ha.data(), b.rows, b.cols);
  auto hret_view = rlcore::make_matrix_view(hret.data(), b.rows, b.cols);
  const rlcore::reinforce_options options{0.97};
  rlcore::reinforce_plus_plus_advantages(dlayout, dmat(dr, b.rows, b.cols), da_view, dret_view,
                                         options, ctx);
  rlcore::reinforce_plus_plus_advantages(
      hlayout, rlcore::make_matrix_view(hr.data(), b.rows, b.cols), ha_view, hret_view, options);
  CHECK(relative_error(to_host(da), ha) < 1e-6);
  CHECK(relative_error(to_host(dret), hret) < 1e-6);

  rlcore::reinforce_plus_plus_baseline_advantages(dlayout, dmat(dr, b.rows, b.cols),
                                                  rlcore::uniform_groups{4}, da_view, options, ctx);
  rlcore::reinforce_plus_plus_baseline_advantages(
      hlayout, rlcore::make_matrix_view(hr.data(), b.rows, b.cols), rlcore::uniform_groups{4},
      ha_view, options);
  CHECK(relative_error(to_host(da), ha) < 1e-6);

  thrust::device_vector<float> dx = dr;
  std::vector<double> hx = hr;
  auto dx_view = dmat(dx, b.rows, b.cols);
  auto hx_view = rlcore::make_matrix_view(hx.data(), b.rows, b.cols);
  rlcore::whiten(dlayout, dx_view, rlcore::whiten_options{}, ctx);
  rlcore::whiten(hlayout, hx_view, rlcore::whiten_options{});
  CHECK(relative_error(to_host(dx), hx) < 1e-6);
}

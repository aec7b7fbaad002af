// The fused GPU fast paths against the CPU in double, and their determinism:
//   rlcore::cuda::gae_advantages (one composite scan per row, kernels/gae_kernels.cuh): padded
//   rows on the 16-byte paths (aligned, shifted) and on the per-element path, packed rows,
//   multi-turn masks,
//   whitening, validation messages; bitwise equal across grids, streams and runs;
//   rlcore::cuda::policy_objective's tiled clipped-surrogate kernel (kernels/policy_kernels.cuh):
//   several option sets and row lengths, masked garbage, bitwise equal across grids, streams,
//   runs and launches of the tail kernel (plain, programmatic dependent), rows counts around the
//   chunk sizes, consecutive calls on one temporary storage and concurrent calls on two streams.
#include "gae_test_util.cuh"
#include "token_batch.cuh"

#include <rlcore/backend/cuda/advantage.cuh>
#include <rlcore/backend/cuda/policy.cuh>

#include <cmath>
#include <cstdint>
#include <limits>

using rlcore::device_space;
using rlcore::index_t;
using namespace rlcore_test;

namespace {

rlcore::device_context ctx{};

} // namespace

TEST_CASE("fused GAE matches the CPU: 16-byte paths, per-element path, every launch shape") {
  const rlcore::gae_options options{0.99, 0.95};
  // 8192 = 4 tiles of 256 x 8 (2 of 256 x 16); 4100: a partial first tile; 1001 (odd T): the
  // shifted 16-byte path; 12: a row shorter than one chunk of threads; gae_launch::access = 1:
  // the per-element path.
  for (index_t cols : {index_t{8192}, index_t{4100}, index_t{1001}, index_t{12}}) {
    INFO("T = ", cols);
    const gae_batch b(24, cols, 11 + static_cast<unsigned>(cols));
    std::vector<double> ha;
    std::vector<double> hret;
    cpu_gae(b, options, ha, hret);
    for (const auto& launch :
         {rlcore::cuda::detail::gae_launch{8}, rlcore::cuda::detail::gae_launch{16},
          rlcore::cuda::detail::gae_launch{8, 1 << 16, 0, 1}}) {
      INFO("items ", launch.items);
      const auto out = gpu_gae(b, options, launch);
      CHECK(scaled_error(out.advantages, ha) < 1e-6);
      CHECK(scaled_error(out.returns, hret) < 1e-6);
      CHECK(masked_slots_zero(b, out));
    }
  }
}

TEST_CASE("fused GAE: hand-derived row with an interior masked token") {
  // One row, gamma 0.5, lambda 0.5, tokens 0..3 with token 2 masked (an observation token):
  //   t = 3: A = r3 - V3 = 1 - 4 = -3;                         returns 1
  //   t = 1: A = r1 + 0.5 * V3 - V1 + 0.25 * A3 = 2 + 2 - 2 - 0.75 = 1.25;  returns 3.25
  //   t = 0: A = r0 + 0.5 * V1 - V0 + 0.25 * A1 = 1 + 1 - 1 + 0.3125 = 1.3125; returns 2.3125
  const thrust::device_vector<float> r = to_device(std::vector<float>{1, 2, 100, 1});
  const thrust::device_vector<float> v = to_device(std::vector<float>{1, 2, 100, 4});
  const thrust::device_vector<std::uint8_t> m = to_device(std::vector<std::uint8_t>{1, 1, 0, 1});
  thrust::device_vector<float> a(4, 7.0f);
  thrust::device_vector<float> ret(4, 7.0f);
  auto av = dmat(a, 1, 4);
  auto rv = dmat(ret, 1, 4);
  rlcore::cuda::gae_advantages(rlcore::cuda::padded(dmat(m, 1, 4)), dmat(r, 1, 4), dmat(v, 1, 4),
                               av, rv, rlcore::gae_options{0.5, 0.5}, ctx);
  const auto ha = to_host(a);
  const auto hret = to_host(ret);
  CHECK(ha == std::vector<float>{1.3125f, 1.25f, 0.0f, -3.0f});
  CHECK(hret == std::vector<float>{2.3125f, 3.25f, 0.0f, 1.0f});
}

TEST_CASE("fused GAE is bitwise reproducible across grids, streams and runs") {
  const gae_batch b(40, 2048, 5);
  const rlcore::gae_options options{0.97, 0.9};
  const auto reference = gpu_gae(b, options);
  cudaStream_t stream{};
  RLCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (index_t blocks : {index_t{1}, index_t{3}, index_t{40}, index_t{1} << 16}) {
    INFO("max blocks ", blocks);
    const auto out = gpu_gae(b, options, {8, blocks}, stream);
    CHECK(bitwise_equal(out.advantages, reference.advantages));
    CHECK(bitwise_equal(out.returns, reference.returns));
  }
  const auto again = gpu_gae(b, options);
  CHECK(bitwise_equal(again.advantages, reference.advantages));
  RLCORE_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("fused GAE on a packed batch equals the padded twin; whitening matches the CPU") {
  const std::vector<index_t> lengths{5, 0, 2100, 1, 4096};
  const index_t cols = 4096;
  std::vector<index_t> offsets{0};
  for (index_t len : lengths) {
    offsets.push_back(offsets.back() + len);
  }
  const index_t total = offsets.back();
  const auto flat_r = uniform<float>(total, -1, 1, 7);
  const auto flat_v = uniform<float>(total, -1, 1, 8);
  const auto flat_m = bernoulli<std::uint8_t>(total, 0.8, 9);
  gae_batch twin(5, cols, 1);
  std::fill(twin.mask.begin(), twin.mask.end(), 0);
  for (int i = 0; i < 5; ++i) {
    for (index_t t = 0; t < lengths[i]; ++t) {
      twin.rewards[i * cols + t] = flat_r[offsets[i] + t];
      twin.values[i * cols + t] = flat_v[offsets[i] + t];
      twin.mask[i * cols + t] = flat_m[offsets[i] + t];
    }
  }
  const auto doff = to_device(offsets);
  const auto dfr = to_device(flat_r);
  const auto dfv = to_device(flat_v);
  const auto dfm = to_device(flat_m);
  thrust::device_vector<float> fa(total);
  thrust::device_vector<float> fret(total);
  const rlcore::gae_options options{0.9, 0.8};
  rlcore::cuda::gae_advantages(rlcore::cuda::packed(doff, dfm), dfr, dfv, fa, fret, options, ctx);
  const auto padded = gpu_gae(twin, options);
  const auto a_flat = to_host(fa);
  const auto ret_flat = to_host(fret);
  std::vector<double> ha;
  std::vector<double> hret;
  cpu_gae(twin, options, ha, hret);
  double err = 0;
  for (int i = 0; i < 5; ++i) {
    for (index_t t = 0; t < lengths[i]; ++t) {
      err = std::max(err, std::abs(double(a_flat[offsets[i] + t]) - ha[i * cols + t]));
      err = std::max(err, std::abs(double(ret_flat[offsets[i] + t]) - hret[i * cols + t]));
    }
  }
  CHECK(err < 1e-5); // |A| up to ~10 here: 1e-6 relative
  CHECK(scaled_error(padded.advantages, ha) < 1e-6);

  rlcore::gae_options whitened = options;
  whitened.whiten = true;
  const auto w = gpu_gae(twin, whitened);
  cpu_gae(twin, whitened, ha, hret);
  CHECK(scaled_error(w.advantages, ha) < 1e-6);
  CHECK(scaled_error(w.returns, hret) < 1e-6);

  // Two-phase form: size query, then the same result.
  std::size_t temp_bytes = 0;
  rlcore::cuda::gae_advantages(nullptr, temp_bytes, rlcore::cuda::packed(doff, dfm), dfr, dfv, fa,
                               fret, options, ctx);
  CHECK(temp_bytes >= 1);
  thrust::device_vector<unsigned char> temp(temp_bytes);
  thrust::device_vector<float> fa2(total);
  rlcore::cuda::gae_advantages(thrust::raw_pointer_cast(temp.data()), temp_bytes,
                               rlcore::cuda::packed(doff, dfm), dfr, dfv, fa2, fret, options, ctx);
  CHECK(bitwise_equal(to_host(fa2), a_flat));
}

TEST_CASE("fused GAE validates its arguments") {
  const thrust::device_vector<std::uint8_t> m(2 * 8, 1);
  const thrust::device_vector<float> r(2 * 8, 1.0f);
  thrust::device_vector<float> a(2 * 8);
  thrust::device_vector<float> ret(2 * 7);
  const auto layout = rlcore::cuda::padded(dmat(m, 2, 8));
  auto av = dmat(a, 2, 8);
  auto good = dmat(a, 2, 8);
  auto bad = dmat(ret, 2, 7);
  check_invalid(
      [&] {
        rlcore::cuda::gae_advantages(layout, dmat(r, 2, 8), dmat(r, 2, 8), av, good,
                                     rlcore::gae_options{1.5, 1.0}, ctx);
      },
      "options.gamma", "1.5");
  check_invalid(
      [&] {
        rlcore::cuda::gae_advantages(layout, dmat(r, 2, 8), dmat(r, 2, 8), av, good,
                                     rlcore::gae_options{1.0, -0.1}, ctx);
      },
      "options.lambda", "-0.1");
  check_invalid(
      [&] { rlcore::cuda::gae_advantages(layout, dmat(r, 2, 8), dmat(r, 2, 8), av, bad, {}, ctx); },
      "returns_out", "(2, 7)");
  std::size_t small = 0;
  check_invalid(
      [&] {
        rlcore::cuda::gae_advantages(thrust::raw_pointer_cast(a.data()), small, layout,
                                     dmat(r, 2, 8), dmat(r, 2, 8), av, good, {}, ctx);
      },
      "temp_bytes", "expected at least 1");
}

namespace {

struct outcome {
  rlcore::objective_result result;
  std::vector<float> grad;
};

/// The CPU objective in double on the same fp32 values (mask ignored when unmasked).
std::pair<rlcore::objective_result, std::vector<double>>
cpu_objective(const token_batch& b, const rlcore::policy_options& o, bool with_ref, bool unmasked) {
  std::vector<std::uint8_t> ones(b.mask.size(), 1);
  const auto& mask = unmasked ? ones : b.mask;
  const auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), b.rows, b.cols));
  const auto lp = as_double(b.lp);
  const auto old = as_double(b.old);
  const auto ref = as_double(b.ref);
  const auto adv = as_double(b.adv);
  std::vector<double> grad(b.rows * b.cols, 0.0);
  auto m = [&](const std::vector<double>& x) {
    return rlcore::make_matrix_view(x.data(), b.rows, b.cols);
  };
  auto g = rlcore::make_matrix_view(grad.data(), b.rows, b.cols);
  using V = decltype(m(lp));
  rlcore::objective_result r;
  if (with_ref) {
    r = rlcore::policy_objective(layout,
                                 rlcore::policy_inputs<V, V, V, V>{m(lp), m(old), m(adv), m(ref)},
                                 g, rlcore::none, o);
  } else {
    r = rlcore::policy_objective(layout, rlcore::policy_inputs<V, V, V>{m(lp), m(old), m(adv)}, g,
                                 rlcore::none, o);
  }
  return {r, grad};
}

/// The fused GPU objective through the two-phase path with a kernel shape, a launch knob and a
/// stream.
template <class Config = rlcore::cuda::detail::default_tile_config>
outcome gpu_objective(const token_batch& b, const rlcore::policy_options& o, bool with_ref,
                      bool unmasked, const rlcore::cuda::detail::policy_launch& launch = {},
                      cudaStream_t stream = nullptr) {
  const auto dmask = to_device(b.mask);
  const auto lp = to_device(b.lp);
  const auto old = to_device(b.old);
  const auto ref = to_device(b.ref);
  const auto adv = to_device(b.adv);
  thrust::device_vector<float> grad(b.rows * b.cols, 123.0f);
  auto g = dmat(grad, b.rows, b.cols);
  const rlcore::device_context c{stream};
  const std::size_t temp_bytes = rlcore::cuda::detail::fused_policy_temp_bytes(b.rows);
  thrust::device_vector<unsigned char> temp(temp_bytes, 0xA5); // garbage: nothing may rely on 0s
  void* d_temp = thrust::raw_pointer_cast(temp.data());
  auto none = rlcore::none;
  auto run = [&](const auto& layout, const auto& inputs) {
    rlcore::cuda::detail::bind_policy_arguments(
        "policy_objective", layout, inputs, g, none, o,
        [&](const auto& views, const auto& gv, const auto& ge, bool) {
          rlcore::cuda::detail::enqueue_fused_policy_objective<Config>(
              "policy_objective", d_temp, layout, views, gv, ge, o, c, launch);
        });
  };
  using V = decltype(dmat(lp, b.rows, b.cols));
  auto with_layout = [&](const auto& layout) {
    if (with_ref) {
      run(layout,
          rlcore::policy_inputs<V, V, V, V>{dmat(lp, b.rows, b.cols), dmat(old, b.rows, b.cols),
                                            dmat(adv, b.rows, b.cols), dmat(ref, b.rows, b.cols)});
    } else {
      run(layout,
          rlcore::policy_inputs<V, V, V>{dmat(lp, b.rows, b.cols), dmat(old, b.rows, b.cols),
                                         dmat(adv, b.rows, b.cols)});
    }
  };
  if (unmasked) {
    with_layout(rlcore::cuda::padded_unmasked(b.rows, b.cols));
  } else {
    with_layout(rlcore::cuda::padded(dmat(dmask, b.rows, b.cols)));
  }
  outcome out;
  out.result = rlcore::cuda::finish_policy_objective(d_temp, o, false, c);
  out.grad = to_host(grad);
  return out;
}

std::vector<rlcore::policy_options> clipped_option_sets() {
  std::vector<rlcore::policy_options> sets;
  sets.push_back(
      rlcore::grpo_options{}.as_policy_options()); // clip 0.2, k3 0.04, seq-mean-token-mean
  rlcore::policy_options dapo;
  dapo.eps_high = 0.28;
  dapo.dual_clip = 3;
  dapo.kl_beta = 0.1;
  dapo.kl = rlcore::kl_estimator::k1;
  dapo.aggregation.mode = rlcore::aggregation::token_mean;
  sets.push_back(dapo);
  rlcore::policy_options clamped;
  clamped.kl_beta = 0.05;
  clamped.kl = rlcore::kl_estimator::k3;
  clamped.kl_output_clamp = true;
  clamped.kl_output_min = -0.02;
  clamped.kl_output_max = 0.02;
  clamped.delta_clip = 1.1;
  clamped.aggregation.mode = rlcore::aggregation::seq_mean_token_sum;
  sets.push_back(clamped);
  rlcore::policy_options k2;
  k2.kl_beta = 0.2;
  k2.kl = rlcore::kl_estimator::k2;
  k2.aggregation.mode = rlcore::aggregation::seq_mean_token_sum_norm;
  k2.aggregation.length_normalizer = 700;
  sets.push_back(k2);
  return sets;
}

void compare(const outcome& gpu,
             const std::pair<rlcore::objective_result, std::vector<double>>& cpu) {
  CHECK(close(gpu.result.loss, cpu.first.loss, 1e-6, 1.0));
  CHECK(gpu.result.metrics.valid_tokens == cpu.first.metrics.valid_tokens);
  CHECK(close(gpu.result.metrics.clip_fraction, cpu.first.metrics.clip_fraction, 1e-6, 1e-3));
  CHECK(close(gpu.result.metrics.kl_penalty_mean, cpu.first.metrics.kl_penalty_mean, 1e-6, 1e-3));
  CHECK(close(gpu.result.metrics.approx_kl, cpu.first.metrics.approx_kl, 1e-6, 1e-3));
  CHECK(close(gpu.result.metrics.advantage_mean, cpu.first.metrics.advantage_mean, 1e-6, 1e-3));
  double scale = 0;
  double err = 0;
  bool finite = true;
  for (std::size_t k = 0; k < cpu.second.size(); ++k) {
    scale = std::max(scale, std::abs(cpu.second[k]));
    err = std::max(err, std::abs(double(gpu.grad[k]) - cpu.second[k]));
    finite = finite && std::isfinite(gpu.grad[k]);
  }
  CHECK(finite);
  CHECK(err <= 1e-6 * scale);
}

} // namespace

TEST_CASE("tiled fused objective (fp32 rows with T % 4 == 0) matches the CPU in double") {
  // 1024: one tile per row; 2052: two full tiles and a partial one; 12: a short row.
  for (index_t cols : {index_t{1024}, index_t{2052}, index_t{12}}) {
    const token_batch b(cols == 12 ? 50 : 21, cols, 3 + static_cast<unsigned>(cols));
    int index = 0;
    for (const auto& o : clipped_option_sets()) {
      INFO("T = ", cols, ", option set ", index++);
      compare(gpu_objective(b, o, true, false), cpu_objective(b, o, true, false));
    }
    rlcore::policy_options ppo; // no reference policy, no KL
    ppo.aggregation.mode = rlcore::aggregation::seq_mean_token_mean;
    INFO("T = ", cols, ", no ref");
    compare(gpu_objective(b, ppo, false, false), cpu_objective(b, ppo, false, false));
    token_batch clean = b; // every slot valid: no garbage
    clean.lp = uniform<float>(clean.lp.size(), -3.0, -0.1, 77);
    for (std::size_t k = 0; k < clean.lp.size(); ++k) {
      clean.old[k] = clean.lp[k] + 0.25f * std::sin(float(k));
    }
    INFO("T = ", cols, ", no mask");
    compare(gpu_objective(clean, clipped_option_sets()[0], true, true),
            cpu_objective(clean, clipped_option_sets()[0], true, true));
  }
}

TEST_CASE("tiled fused objective: masked slots get exactly 0; hand-derived token") {
  token_batch b(3, 8, 1);
  std::fill(b.mask.begin(), b.mask.end(), 0);
  b.mask[0] = 1; // row 0: one valid token; rows 1, 2 all masked
  b.lp[0] = -1.0f;
  b.old[0] = -1.1f;
  b.adv[0] = 1.0f;
  b.ref[0] = -1.0f; // x = 0: k3 = 0, gradient 0
  const auto out = gpu_objective(b, rlcore::grpo_options{}.as_policy_options(), true, false);
  // ratio = exp(0.1) inside [0.8, 1.2], A = 1, n_0 = 1, N = 3: d loss / d lp = -exp(0.1) / 3.
  CHECK(out.grad[0] == doctest::Approx(-std::exp(0.1) / 3).epsilon(1e-6));
  CHECK(out.result.loss == doctest::Approx(-std::exp(0.1) / 3).epsilon(1e-6));
  for (std::size_t k = 1; k < out.grad.size(); ++k) {
    CHECK(out.grad[k] == 0.0f);
  }
  CHECK(out.result.metrics.valid_tokens == 1);
}

TEST_CASE("fused objective is bitwise reproducible across grids, streams and runs") {
  using rlcore::cuda::detail::policy_tail;
  const token_batch b(70, 1024, 21);
  const auto o = rlcore::grpo_options{}.as_policy_options();
  const auto reference = gpu_objective(b, o, true, false);
  cudaStream_t stream{};
  RLCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const policy_tail tail : {policy_tail::dependent_kernel, policy_tail::kernel}) {
    for (const index_t max_blocks : {index_t{1}, index_t{2}, index_t{5}, index_t{9}}) {
      INFO("max blocks ", max_blocks, ", tail ", static_cast<int>(tail));
      const auto out = gpu_objective(b, o, true, false, {max_blocks, tail}, stream);
      CHECK(std::memcmp(&out.result, &reference.result, sizeof(out.result)) == 0);
      CHECK(bitwise_equal(out.grad, reference.grad));
    }
  }
  const auto again = gpu_objective(b, o, true, false);
  CHECK(std::memcmp(&again.result, &reference.result, sizeof(again.result)) == 0);
  CHECK(bitwise_equal(again.grad, reference.grad));
  RLCORE_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE(
    "fused objective: kernel shapes with the same float4 groups per lane give the same bits") {
  // Every shape with one group gives lane l of a warp the tokens 128 s + 4 l .. + 3 of step s of
  // its row and sums them in the same order, so block size and registers per thread must not change
  // a bit; likewise among two-group shapes.
  using rlcore::cuda::detail::tile_config;
  for (index_t cols : {index_t{1024}, index_t{2052}, index_t{12}}) {
    const token_batch b(37, cols, 40 + static_cast<unsigned>(cols));
    int index = 0;
    for (const auto& o : clipped_option_sets()) {
      INFO("T = ", cols, ", option set ", index++);
      const auto reference = gpu_objective<tile_config<256, 1, 4>>(b, o, true, false);
      compare(reference, cpu_objective(b, o, true, false));
      for (const auto& other : {gpu_objective<tile_config<256, 1, 3>>(b, o, true, false),
                                gpu_objective<tile_config<128, 1, 6>>(b, o, true, false),
                                gpu_objective<tile_config<64, 1, 8>>(b, o, true, false, {3})}) {
        CHECK(std::memcmp(&other.result, &reference.result, sizeof(other.result)) == 0);
        CHECK(bitwise_equal(other.grad, reference.grad));
      }
      // Two groups per lane (the default): lane l holds tokens 256 s + 4 l .. + 3 and
      // 256 s + 128 + 4 l .. + 3 of step s, whatever the block size.
      const auto two_groups = gpu_objective(b, o, true, false); // default_tile_config
      compare(two_groups, cpu_objective(b, o, true, false));
      const auto two_groups_small = gpu_objective<tile_config<64, 2, 8>>(b, o, true, false, {5});
      CHECK(std::memcmp(&two_groups_small.result, &two_groups.result, sizeof(two_groups.result))
            == 0);
      CHECK(bitwise_equal(two_groups_small.grad, two_groups.grad));
    }
  }
}

TEST_CASE("tiled objective: chunk sizes depend only on the rows count") {
  using rlcore::cuda::detail::policy_chunk_rows;
  using rlcore::cuda::detail::policy_chunks;
  // 8 rows per chunk up to 4095 rows, then doubling until ~256 chunks, at most 64 rows.
  CHECK(policy_chunk_rows(1) == 8);
  CHECK(policy_chunk_rows(4095) == 8);
  CHECK(policy_chunk_rows(4096) == 16);
  CHECK(policy_chunk_rows(8191) == 16);
  CHECK(policy_chunk_rows(8192) == 32);
  CHECK(policy_chunk_rows(16384) == 64);
  CHECK(policy_chunk_rows(index_t{1} << 22) == 64);
  CHECK(policy_chunks(1) == 1);
  CHECK(policy_chunks(9) == 2);
  CHECK(policy_chunks(4095) == 512);
  CHECK(policy_chunks(16384) == 256);
  CHECK(policy_chunks(20000) == 313);
}

TEST_CASE("tiled objective: rows counts around the chunk sizes, every grid and tail launch") {
  using rlcore::cuda::detail::policy_tail;
  const auto o = rlcore::grpo_options{}.as_policy_options();
  // 1 row; fewer rows than a chunk; one chunk and one more row; several 8-row chunks; 64-row
  // chunks with a partial last chunk and more than 256 chunk slots (20000 rows: 313 slots).
  for (const index_t rows : {index_t{1}, index_t{7}, index_t{9}, index_t{300}, index_t{20000}}) {
    const index_t cols = rows > 1000 ? 8 : 64;
    const token_batch b(rows, cols, 90 + static_cast<unsigned>(rows));
    INFO("rows ", rows);
    const auto reference = gpu_objective(b, o, true, false);
    compare(reference, cpu_objective(b, o, true, false));
    for (const policy_tail tail : {policy_tail::dependent_kernel, policy_tail::kernel}) {
      for (const index_t max_blocks : {index_t{0}, index_t{1}, index_t{3}, index_t{64}}) {
        INFO("max blocks ", max_blocks, ", tail ", static_cast<int>(tail));
        const auto out = gpu_objective(b, o, true, false, {max_blocks, tail});
        CHECK(std::memcmp(&out.result, &reference.result, sizeof(out.result)) == 0);
        CHECK(bitwise_equal(out.grad, reference.grad));
      }
    }
  }
}

TEST_CASE("tiled objective: consecutive calls on one temporary storage, two streams at once") {
  using rlcore::cuda::detail::policy_tail;
  const auto o = rlcore::grpo_options{}.as_policy_options();
  const token_batch b(300, 64, 5);
  const token_batch other(300, 64, 6);
  const auto expected = gpu_objective(b, o, true, false);
  const auto expected_other = gpu_objective(other, o, true, false);
  REQUIRE(expected.result.loss != expected_other.result.loss);
  struct device_batch {
    const token_batch& host;
    thrust::device_vector<std::uint8_t> mask;
    thrust::device_vector<float> lp, old, ref, adv, grad;
    explicit device_batch(const token_batch& t)
        : host(t), mask(to_device(t.mask)), lp(to_device(t.lp)), old(to_device(t.old)),
          ref(to_device(t.ref)), adv(to_device(t.adv)), grad(t.rows * t.cols, 7.0f) {}
  };
  device_batch first(b);
  device_batch second(other);
  const std::size_t temp_bytes = rlcore::cuda::detail::fused_policy_temp_bytes(b.rows);
  thrust::device_vector<unsigned char> temp1(temp_bytes, 0xFF);
  thrust::device_vector<unsigned char> temp2(temp_bytes, 0xFF);
  void* d_temp1 = thrust::raw_pointer_cast(temp1.data());
  void* d_temp2 = thrust::raw_pointer_cast(temp2.data());
  const auto enqueue = [&](device_batch& d, void* d_temp,
                           const rlcore::cuda::detail::policy_launch& launch,
                           const rlcore::device_context& c) {
    const index_t n = d.host.rows;
    const index_t t = d.host.cols;
    const auto layout = rlcore::cuda::padded(dmat(d.mask, n, t));
    using V = decltype(dmat(d.lp, n, t));
    const rlcore::policy_inputs<V, V, V, V> inputs{dmat(d.lp, n, t), dmat(d.old, n, t),
                                                   dmat(d.adv, n, t), dmat(d.ref, n, t)};
    auto g = dmat(d.grad, n, t);
    auto none = rlcore::none;
    rlcore::cuda::detail::bind_policy_arguments(
        "policy_objective", layout, inputs, g, none, o,
        [&](const auto& views, const auto& gv, const auto& ge, bool) {
          rlcore::cuda::detail::enqueue_fused_policy_objective("policy_objective", d_temp, layout,
                                                               views, gv, ge, o, c, launch);
        });
  };
  const auto result_of = [&](void* d_temp, const rlcore::device_context& c) {
    return rlcore::cuda::finish_policy_objective(d_temp, o, false, c);
  };
  for (const policy_tail tail : {policy_tail::dependent_kernel, policy_tail::kernel}) {
    INFO("tail ", static_cast<int>(tail));
    // Three consecutive calls on the same storage alternating two batches: each call starts from
    // what the previous one left (counter, slots, result).
    for (int k = 0; k < 3; ++k) {
      const bool odd = k % 2 != 0;
      device_batch& d = odd ? second : first;
      enqueue(d, d_temp1, {0, tail}, ctx);
      const auto r = result_of(d_temp1, ctx);
      const auto& want = odd ? expected_other : expected;
      CHECK(std::memcmp(&r, &want.result, sizeof(r)) == 0);
      CHECK(bitwise_equal(to_host(d.grad), want.grad));
    }
    // Two calls in flight at once on two streams with separate storage.
    cudaStream_t s1{};
    cudaStream_t s2{};
    RLCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    RLCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    const rlcore::device_context c1{s1};
    const rlcore::device_context c2{s2};
    RLCORE_CUDA_CHECK(cudaDeviceSynchronize());
    for (int k = 0; k < 4; ++k) {
      enqueue(first, d_temp1, {0, tail}, c1);
      enqueue(second, d_temp2, {0, tail}, c2);
    }
    const auto r1 = result_of(d_temp1, c1);
    const auto r2 = result_of(d_temp2, c2);
    CHECK(std::memcmp(&r1, &expected.result, sizeof(r1)) == 0);
    CHECK(std::memcmp(&r2, &expected_other.result, sizeof(r2)) == 0);
    CHECK(bitwise_equal(to_host(first.grad), expected.grad));
    CHECK(bitwise_equal(to_host(second.grad), expected_other.grad));
    RLCORE_CUDA_CHECK(cudaStreamDestroy(s1));
    RLCORE_CUDA_CHECK(cudaStreamDestroy(s2));
  }
}

TEST_CASE("fused objective as a programmatic dependent: reads what the previous kernel wrote") {
  // The log-probs are written by a kernel that spins ~1 ms first and lets its dependent start;
  // the tiled kernel (a programmatic dependent on sm_90) must read them, not the zeros before:
  // the same bits as a call on inputs copied before the call.
  const token_batch b(300, 1024, 61);
  const auto o = rlcore::grpo_options{}.as_policy_options();
  const index_t n = b.rows * b.cols;
  const auto dmask = to_device(b.mask);
  const auto source = to_device(b.lp);
  const auto old = to_device(b.old);
  const auto ref = to_device(b.ref);
  const auto adv = to_device(b.adv);
  const auto layout = rlcore::cuda::padded(dmat(dmask, b.rows, b.cols));
  std::size_t temp_bytes = rlcore::cuda::detail::fused_policy_temp_bytes(b.rows);
  thrust::device_vector<unsigned char> temp(temp_bytes);
  void* d_temp = thrust::raw_pointer_cast(temp.data());
  cudaStream_t stream{};
  RLCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const rlcore::device_context c{stream};
  const auto call = [&](const thrust::device_vector<float>& lp,
                        thrust::device_vector<float>& grad) {
    using V = decltype(dmat(lp, b.rows, b.cols));
    auto g = dmat(grad, b.rows, b.cols);
    rlcore::cuda::policy_objective(
        d_temp, temp_bytes, layout,
        rlcore::policy_inputs<V, V, V, V>{dmat(lp, b.rows, b.cols), dmat(old, b.rows, b.cols),
                                          dmat(adv, b.rows, b.cols), dmat(ref, b.rows, b.cols)},
        g, rlcore::none, o, c);
    return rlcore::cuda::finish_policy_objective(d_temp, o, false, c);
  };
  thrust::device_vector<float> grad_before(n, 5.0f);
  const rlcore::objective_result before = call(source, grad_before);
  thrust::device_vector<float> lp(n, 0.0f);
  thrust::device_vector<float> grad(n, 5.0f);
  enqueue_delayed_copy(thrust::raw_pointer_cast(lp.data()), thrust::raw_pointer_cast(source.data()),
                       n, 2000000, stream);
  RLCORE_CUDA_CHECK(cudaGetLastError());
  const rlcore::objective_result after = call(lp, grad);
  RLCORE_CUDA_CHECK(cudaStreamDestroy(stream));
  CHECK(std::memcmp(&after, &before, sizeof(after)) == 0);
  CHECK(bitwise_equal(to_host(grad), to_host(grad_before)));
}

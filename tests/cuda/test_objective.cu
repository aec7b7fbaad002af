// The policy objectives on the GPU: the generic rlcore::policy_objective / grpo_objective with a
// device context, and the fused rlcore::cuda::policy_objective / grpo_objective, against the CPU
// (double, the same fp32 inputs) for several loss forms, KL estimators and aggregation modes;
// bitwise determinism; masked slots holding inf / NaN give exactly 0 gradient and finite loss;
// the device's bounded exponential against exp in double.
#include "cuda_test_util.cuh"
#include "token_batch.cuh"

#include <rlcore/backend/cuda/policy.cuh>
#include <rlcore/math/functions.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

using rlcore::device_space;
using rlcore::index_t;
using namespace rlcore_test;

namespace {

rlcore::device_context ctx{};

/// out[k] = math::exp_vectorizable_bounded(x[k]) in device code (the fp32 fast form).
__global__ void exp_bounded_kernel(const float* x, float* out, index_t n) {
  const index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < n) {
    out[k] = rlcore::math::exp_vectorizable_bounded(x[k]);
  }
}

struct outcome {
  rlcore::objective_result result;
  std::vector<double> grad;
};

/// The CPU objective in double.
outcome cpu_objective(const token_batch& b, const rlcore::policy_options& o) {
  const auto layout = rlcore::padded(rlcore::make_matrix_view(b.mask.data(), b.rows, b.cols));
  const auto lp = as_double(b.lp);
  const auto old = as_double(b.old);
  const auto ref = as_double(b.ref);
  const auto adv = as_double(b.adv);
  outcome out;
  out.grad.assign(b.rows * b.cols, 0.0);
  auto m = [&](const std::vector<double>& x) {
    return rlcore::make_matrix_view(x.data(), b.rows, b.cols);
  };
  auto g = rlcore::make_matrix_view(out.grad.data(), b.rows, b.cols);
  out.result = rlcore::policy_objective(
      layout,
      rlcore::policy_inputs<decltype(m(lp)), decltype(m(lp)), decltype(m(lp)), decltype(m(lp))>{
          m(lp), m(old), m(adv), m(ref)},
      g, rlcore::none, o);
  return out;
}

/// The GPU objective (fused or generic) in fp32.
template <bool Fused>
outcome gpu_objective(const token_batch& b, const rlcore::policy_options& o) {
  const auto dmask = to_device(b.mask);
  const auto lp = to_device(b.lp);
  const auto old = to_device(b.old);
  const auto ref = to_device(b.ref);
  const auto adv = to_device(b.adv);
  thrust::device_vector<float> grad(b.rows * b.cols, 123.0f);
  auto m = [&](const thrust::device_vector<float>& x) {
    return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(x.data()), b.rows,
                                                  b.cols);
  };
  auto g =
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(grad.data()), b.rows, b.cols);
  const auto layout = rlcore::cuda::padded(rlcore::make_matrix_view<device_space>(
      thrust::raw_pointer_cast(dmask.data()), b.rows, b.cols));
  using V = decltype(m(lp));
  const rlcore::policy_inputs<V, V, V, V> inputs{m(lp), m(old), m(adv), m(ref)};
  outcome out;
  if constexpr (Fused) {
    out.result = rlcore::cuda::policy_objective(layout, inputs, g, rlcore::none, o, ctx);
  } else {
    out.result = rlcore::policy_objective(layout, inputs, g, rlcore::none, o, ctx);
  }
  out.grad = as_double(to_host(grad));
  return out;
}

void compare(const outcome& gpu, const outcome& cpu) {
  // The loss is a weighted mean of O(1) per-token terms of both signs (A is symmetric around 0),
  // so it can be much smaller than its terms: agreement is measured relative to the terms' scale.
  CHECK(close(gpu.result.loss, cpu.result.loss, 1e-6, 1.0));
  CHECK(gpu.result.metrics.valid_tokens == cpu.result.metrics.valid_tokens);
  CHECK(close(gpu.result.metrics.clip_fraction, cpu.result.metrics.clip_fraction, 1e-6, 1e-3));
  CHECK(close(gpu.result.metrics.kl_penalty_mean, cpu.result.metrics.kl_penalty_mean, 1e-6, 1e-3));
  double scale = 0;
  double err = 0;
  bool finite = true;
  for (std::size_t k = 0; k < cpu.grad.size(); ++k) {
    scale = std::max(scale, std::abs(cpu.grad[k]));
    err = std::max(err, std::abs(gpu.grad[k] - cpu.grad[k]));
    finite = finite && std::isfinite(gpu.grad[k]);
  }
  CHECK(finite);
  CHECK(err <= 1e-6 * scale);
}

std::vector<rlcore::policy_options> option_sets() {
  std::vector<rlcore::policy_options> sets;
  sets.push_back(rlcore::grpo_options{}.as_policy_options()); // GRPO paper defaults
  rlcore::policy_options dapo;
  dapo.eps_high = 0.28;
  dapo.dual_clip = 3;
  dapo.kl_beta = 0.1;
  dapo.kl = rlcore::kl_estimator::k3_importance;
  dapo.aggregation.mode = rlcore::aggregation::token_mean;
  sets.push_back(dapo);
  rlcore::policy_options gspo;
  gspo.loss = rlcore::policy_loss::gspo;
  gspo.aggregation.mode = rlcore::aggregation::seq_mean_token_sum;
  sets.push_back(gspo);
  rlcore::policy_options sapo;
  sapo.loss = rlcore::policy_loss::sapo;
  sapo.kl_beta = 0.05;
  sapo.kl = rlcore::kl_estimator::k2;
  sapo.aggregation.mode = rlcore::aggregation::seq_mean_token_sum_norm;
  sapo.aggregation.length_normalizer = 512;
  sets.push_back(sapo);
  return sets;
}

} // namespace

TEST_CASE("policy objectives on the GPU (generic and fused) match the CPU in double") {
  const token_batch b(40, 300, 5);
  int index = 0;
  for (const auto& o : option_sets()) {
    INFO("option set ", index++);
    const auto cpu = cpu_objective(b, o);
    compare(gpu_objective<false>(b, o), cpu);
    compare(gpu_objective<true>(b, o), cpu);
  }
}

TEST_CASE("fused policy objective: bitwise repeatable; masked slots get exactly 0") {
  const token_batch b(64, 513, 9);
  const auto o = rlcore::grpo_options{}.as_policy_options();
  const auto first = gpu_objective<true>(b, o);
  const auto second = gpu_objective<true>(b, o);
  CHECK(std::memcmp(&first.result.loss, &second.result.loss, sizeof(double)) == 0);
  CHECK(first.grad == second.grad);
  for (std::size_t k = 0; k < b.mask.size(); ++k) {
    if (b.mask[k] == 0) {
      CHECK(first.grad[k] == 0.0);
    }
  }
  CHECK(std::isfinite(first.result.loss));
}

TEST_CASE("fused policy objective on a packed batch equals the padded one") {
  // Two rows of 3 and 5 tokens; the padded twin is 2 x 5 with the tail masked.
  const std::vector<index_t> offsets{0, 3, 8};
  const std::vector<float> lp{-1.0f, -0.5f, -2.0f, -0.1f, -0.7f, -1.2f, -0.3f, -0.9f};
  const std::vector<float> old{-1.1f, -0.4f, -2.5f, -0.1f, -0.2f, -1.0f, -0.3f, -1.6f};
  const std::vector<float> adv{1.0f, 1.0f, 1.0f, -0.5f, -0.5f, -0.5f, -0.5f, -0.5f};
  const auto dofs = to_device(offsets);
  const auto dlp = to_device(lp);
  const auto dold = to_device(old);
  const auto dadv = to_device(adv);
  thrust::device_vector<float> dgrad(8);
  const auto packed = rlcore::cuda::packed(dofs);
  rlcore::policy_options o;
  o.aggregation.mode = rlcore::aggregation::seq_mean_token_mean;
  const auto r_packed = rlcore::cuda::policy_objective(
      packed,
      rlcore::policy_inputs<thrust::device_vector<float>, thrust::device_vector<float>,
                            thrust::device_vector<float>>{dlp, dold, dadv},
      dgrad, rlcore::none, o, ctx);

  std::vector<float> plp(10, 0.0f), pold(10, 0.0f), padv(10, 0.0f);
  std::vector<std::uint8_t> pmask(10, 0);
  for (int i = 0; i < 2; ++i) {
    for (index_t t = 0; t < offsets[i + 1] - offsets[i]; ++t) {
      plp[i * 5 + t] = lp[offsets[i] + t];
      pold[i * 5 + t] = old[offsets[i] + t];
      padv[i * 5 + t] = adv[offsets[i] + t];
      pmask[i * 5 + t] = 1;
    }
  }
  token_batch twin(2, 5, 1);
  twin.mask = pmask;
  twin.lp = plp;
  twin.old = pold;
  twin.ref = plp;
  twin.adv = padv;
  const auto padded = gpu_objective<true>(twin, o);
  CHECK(r_packed.loss == doctest::Approx(padded.result.loss).epsilon(1e-6));
  const auto g = to_host(dgrad);
  for (int i = 0; i < 2; ++i) {
    for (index_t t = 0; t < offsets[i + 1] - offsets[i]; ++t) {
      CHECK(g[offsets[i] + t] == doctest::Approx(padded.grad[i * 5 + t]).epsilon(1e-6));
    }
  }
  // Hand check of token 0: ratio = exp(0.1) = 1.105 inside [0.8, 1.2], A = 1, row of 3 tokens,
  // 2 sequences: d loss / d lp = -A * ratio / (n_0 * N) = -exp(0.1) / 6.
  CHECK(g[0] == doctest::Approx(-std::exp(0.1) / 6).epsilon(1e-5));
}

TEST_CASE("device exp_vectorizable_bounded (float) is within 2.5e-7 of exp over [-86, 86]") {
  // A dense sweep (step 2^-12 around 0, where the ratio and k3's exponential live) plus the whole
  // allowed range, against exp in double. The bound is ~2 ulp: ex2.approx's 2^-22.5 plus the
  // final rounding.
  std::vector<float> x;
  for (int k = -8192; k <= 8192; ++k) {
    x.push_back(static_cast<float>(k) / 4096.0f); // [-2, 2]
  }
  const auto wide = uniform<float>(200000, -86.0, 86.0, 7);
  x.insert(x.end(), wide.begin(), wide.end());
  for (float edge : {-86.0f, -80.0f, -20.0f, 0.0f, -0.0f, 1e-30f, 20.0f, 80.0f, 86.0f}) {
    x.push_back(edge);
  }
  const auto dx = to_device(x);
  thrust::device_vector<float> dout(x.size());
  const auto n = static_cast<index_t>(x.size());
  exp_bounded_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(
      thrust::raw_pointer_cast(dx.data()), thrust::raw_pointer_cast(dout.data()), n);
  RLCORE_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = to_host(dout);
  double worst = 0;
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double exact = std::exp(static_cast<double>(x[k]));
    worst = std::max(worst, std::abs(static_cast<double>(out[k]) - exact) / exact);
  }
  MESSAGE("max relative error of the device exp_vectorizable_bounded: ", worst);
  CHECK(worst <= 2.5e-7);
  CHECK(out[x.size() - 6] == 1.0f); // exp(0) exactly 1 (the masked slots' ratio)
  CHECK(out[x.size() - 5] == 1.0f);
}

TEST_CASE("fused policy objective: rows longer than the tiled kernel's limit match the CPU") {
  // T = 2^20 + 4 > policy_tiles_max_cols: the warp-per-row kernel takes it (same contract).
  const index_t cols = rlcore::cuda::detail::policy_tiles_max_cols + 4;
  const token_batch b(3, cols, 31);
  const auto o = rlcore::grpo_options{}.as_policy_options();
  const auto gpu = gpu_objective<true>(b, o);
  const auto cpu = cpu_objective(b, o);
  CHECK(gpu.result.metrics.valid_tokens == cpu.result.metrics.valid_tokens);
  CHECK(close(gpu.result.loss, cpu.result.loss, 1e-6, 1.0));
  // Each lane sums 2^15 terms of a row in float: means carry ~1e-5 relative error at this length.
  CHECK(close(gpu.result.metrics.kl_penalty_mean, cpu.result.metrics.kl_penalty_mean, 1e-4, 1e-3));
  CHECK(close(gpu.result.metrics.clip_fraction, cpu.result.metrics.clip_fraction, 1e-4, 1e-3));
  double scale = 0;
  double err = 0;
  for (std::size_t k = 0; k < cpu.grad.size(); ++k) {
    scale = std::max(scale, std::abs(cpu.grad[k]));
    err = std::max(err, std::abs(gpu.grad[k] - cpu.grad[k]));
  }
  CHECK(err <= 1e-6 * scale);
}

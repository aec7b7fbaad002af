// Shared helpers of the objective tests: error-message checks, random inputs, central finite
// differences.
#pragma once

#include "../common/check_invalid.hpp"

#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace rlcore_test {

inline std::vector<double> uniform(std::size_t n, double lo, double hi, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> x(n);
  for (double& v : x) {
    v = dist(rng);
  }
  return x;
}

// Central finite difference of loss(x) w.r.t. every x[k] (step h), compared with `gradient` to
// absolute tolerance tol (relative to max(1, |g|)).
inline void check_gradient(const std::function<double(const std::vector<double>&)>& loss,
                           std::vector<double> x, const std::vector<double>& gradient,
                           double h = 1e-6, double tol = 1e-7) {
  REQUIRE(gradient.size() == x.size());
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double saved = x[k];
    x[k] = saved + h;
    const double up = loss(x);
    x[k] = saved - h;
    const double down = loss(x);
    x[k] = saved;
    const double numeric = (up - down) / (2 * h);
    INFO("component ", k, ": analytic ", gradient[k], " numeric ", numeric);
    CHECK(std::abs(numeric - gradient[k]) <= tol * std::max(1.0, std::abs(gradient[k])));
  }
}

inline bool all_finite(const std::vector<double>& x) {
  for (double v : x) {
    if (!std::isfinite(v)) {
      return false;
    }
  }
  return true;
}

} // namespace rlcore_test

#include <rlcore/objective/policy.hpp>

namespace rlcore_test {

// A padded batch held in double vectors (row-major N x T); every optional input present.
struct policy_batch {
  rlcore::index_t rows = 0;
  rlcore::index_t cols = 0;
  std::vector<double> mask, log_probs, old_log_probs, advantages, ref_log_probs, entropy,
      rollout_log_probs;
};

struct policy_run {
  double loss = 0;
  rlcore::objective_metrics metrics;
  std::vector<double> grad, grad_entropy;
};

// Runs the padded policy objective with every optional input given.
inline policy_run run_policy(const policy_batch& b, const rlcore::policy_options& options) {
  using rlcore::make_matrix_view;
  auto view = [&](const std::vector<double>& x) {
    return make_matrix_view(x.data(), b.rows, b.cols);
  };
  policy_run out;
  out.grad.assign(b.mask.size(), -99.0); // sentinel: every slot must be written
  out.grad_entropy.assign(b.mask.size(), -99.0);
  auto layout = rlcore::padded(view(b.mask));
  const auto r = rlcore::policy_objective(
      layout,
      rlcore::policy_inputs{.log_probs = view(b.log_probs),
                            .old_log_probs = view(b.old_log_probs),
                            .advantages = view(b.advantages),
                            .ref_log_probs = view(b.ref_log_probs),
                            .entropy = view(b.entropy),
                            .rollout_log_probs = view(b.rollout_log_probs)},
      make_matrix_view(out.grad.data(), b.rows, b.cols),
      make_matrix_view(out.grad_entropy.data(), b.rows, b.cols), options);
  out.loss = r.loss;
  out.metrics = r.metrics;
  return out;
}

// A random batch: log-probs in [-3, -0.05], |lp - old| <= 0.5, advantages in [-2, 2] (per token),
// a mask with interior holes and one all-masked row when rows >= 3.
inline policy_batch random_batch(rlcore::index_t rows, rlcore::index_t cols, unsigned seed) {
  policy_batch b;
  b.rows = rows;
  b.cols = cols;
  const auto n = static_cast<std::size_t>(rows * cols);
  b.log_probs = uniform(n, -3, -0.05, seed);
  const auto d = uniform(n, -0.5, 0.5, seed + 1);
  const auto dr = uniform(n, -0.6, 0.6, seed + 2);
  const auto di = uniform(n, -0.8, 0.8, seed + 3);
  b.advantages = uniform(n, -2, 2, seed + 4);
  b.entropy = uniform(n, 0.1, 3, seed + 5);
  const auto u = uniform(n, 0, 1, seed + 6);
  b.mask.resize(n);
  b.old_log_probs.resize(n);
  b.ref_log_probs.resize(n);
  b.rollout_log_probs.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    b.old_log_probs[k] = b.log_probs[k] - d[k];
    b.ref_log_probs[k] = b.log_probs[k] - dr[k];
    b.rollout_log_probs[k] = b.old_log_probs[k] - di[k];
    b.mask[k] = u[k] < 0.8 ? 1.0 : 0.0;
  }
  if (rows >= 3) {
    for (rlcore::index_t t = 0; t < cols; ++t) {
      b.mask[static_cast<std::size_t>(2 * cols + t)] = 0.0; // row 2 all masked
    }
  }
  return b;
}

} // namespace rlcore_test

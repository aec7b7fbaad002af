// Every gradient of policy_objective against central finite differences in double: each loss form,
// each KL estimator, entropy bonus, importance correction and entropy masking, under every
// aggregation mode, on random batches with interior holes and an all-masked row.
#include "objective_test_util.hpp"

#include <algorithm>
#include <cmath>
#include <string>

using rlcore::aggregation;
using rlcore::policy_loss;
using rlcore::policy_options;
using rlcore_test::policy_batch;
using rlcore_test::run_policy;

namespace {

void check_policy_gradients(const policy_batch& b, const policy_options& o) {
  const auto base = run_policy(b, o);
  REQUIRE(rlcore_test::all_finite(base.grad));
  // d loss / d lp
  rlcore_test::check_gradient(
      [&](const std::vector<double>& lp) {
        policy_batch c = b;
        c.log_probs = lp;
        return run_policy(c, o).loss;
      },
      b.log_probs, base.grad);
  // d loss / d entropy (entropy masking excluded: its threshold moves with the entropies)
  if (o.entropy_top_fraction == 1) {
    rlcore_test::check_gradient(
        [&](const std::vector<double>& h) {
          policy_batch c = b;
          c.entropy = h;
          return run_policy(c, o).loss;
        },
        b.entropy, base.grad_entropy);
  }
  // masked slots: exactly zero
  for (std::size_t k = 0; k < b.mask.size(); ++k) {
    if (b.mask[k] == 0) {
      CHECK(base.grad[k] == 0.0);
      CHECK(base.grad_entropy[k] == 0.0);
    }
  }
}

const aggregation all_modes[] = {aggregation::token_mean, aggregation::token_sum,
                                 aggregation::seq_mean_token_sum, aggregation::seq_mean_token_mean,
                                 aggregation::seq_mean_token_sum_norm};

policy_options base_options(policy_loss loss, aggregation mode) {
  policy_options o;
  o.loss = loss;
  o.aggregation.mode = mode;
  o.aggregation.length_normalizer = 7;
  o.kl_beta = 0.05;
  o.entropy_coef = 0.01;
  return o;
}

} // namespace

// CISPO and GSPO-token define their gradient through a stop-gradient (the value depends on lp
// through a factor whose gradient is dropped), so a finite difference of the value is not their
// gradient: they are checked against their closed forms below and against torch autograd in the
// golden test.
TEST_CASE("finite differences: every loss form x every aggregation (with KL k3 and entropy)") {
  const auto b = rlcore_test::random_batch(4, 6, 101);
  for (policy_loss loss : {policy_loss::clipped, policy_loss::gspo, policy_loss::gmpo,
                           policy_loss::sapo, policy_loss::reinforce}) {
    for (aggregation mode : all_modes) {
      policy_options o = base_options(loss, mode);
      o.gspo_eps_low = 0.2; // keep GSPO sequence ratios inside the clip range for a real test
      o.gspo_eps_high = 0.2;
      INFO("loss ", static_cast<int>(loss), " aggregation ", static_cast<int>(mode));
      check_policy_gradients(b, o);
    }
  }
}

TEST_CASE("CISPO gradient: -w * min(ratio, 1 + eps_high) * A at every valid token") {
  const auto b = rlcore_test::random_batch(4, 6, 111);
  for (aggregation mode : all_modes) {
    policy_options o = base_options(policy_loss::cispo, mode);
    o.kl_beta = 0;
    const auto r = run_policy(b, o);
    // the same weights w[i, t] come out of REINFORCE (gradient -w A) with A := 1
    policy_batch unit = b;
    std::fill(unit.advantages.begin(), unit.advantages.end(), 1.0);
    policy_options ro = o;
    ro.loss = policy_loss::reinforce;
    const auto w = run_policy(unit, ro);
    for (std::size_t k = 0; k < b.mask.size(); ++k) {
      const double ratio = std::exp(b.log_probs[k] - b.old_log_probs[k]);
      const double expected = w.grad[k] * std::min(ratio, 1.2) * b.advantages[k];
      CHECK(r.grad[k] == doctest::Approx(expected).epsilon(1e-13));
    }
  }
}

TEST_CASE("GSPO-token equals GSPO-sequence when advantages are constant within each row") {
  auto b = rlcore_test::random_batch(4, 6, 121);
  for (rlcore::index_t i = 0; i < b.rows; ++i) {
    for (rlcore::index_t t = 0; t < b.cols; ++t) {
      b.advantages[static_cast<std::size_t>(i * b.cols + t)] = 0.5 - 0.4 * double(i);
    }
  }
  for (aggregation mode : all_modes) {
    policy_options o = base_options(policy_loss::gspo, mode);
    o.gspo_eps_low = 0.2;
    o.gspo_eps_high = 0.2;
    const auto sequence = run_policy(b, o);
    o.gspo = rlcore::gspo_level::token;
    const auto token = run_policy(b, o);
    CHECK(token.loss == doctest::Approx(sequence.loss).epsilon(1e-13));
    // row weights are uniform, so w * n_i * dl/dlog s / n_i (sequence) = w * dl/dlog s (token)
    for (std::size_t k = 0; k < b.mask.size(); ++k) {
      CHECK(token.grad[k] == doctest::Approx(sequence.grad[k]).epsilon(1e-13));
    }
  }
}

TEST_CASE("finite differences: clip variants (clip-higher, dual clip, delta clip)") {
  const auto b = rlcore_test::random_batch(3, 8, 202);
  policy_options o = base_options(policy_loss::clipped, aggregation::token_mean);
  o.eps_high = 0.28;
  check_policy_gradients(b, o);
  o.dual_clip = 1.5;
  check_policy_gradients(b, o);
  o.delta_clip = 1.3;
  check_policy_gradients(b, o);
  o.eps_low = 0.05;
  o.eps_high = 0.05;
  check_policy_gradients(b, o);
}

TEST_CASE("finite differences: every KL estimator, with and without output clamp") {
  const auto b = rlcore_test::random_batch(3, 5, 303);
  for (rlcore::kl_estimator e :
       {rlcore::kl_estimator::k1, rlcore::kl_estimator::abs, rlcore::kl_estimator::k2,
        rlcore::kl_estimator::k3, rlcore::kl_estimator::k3_importance}) {
    policy_options o = base_options(policy_loss::clipped, aggregation::seq_mean_token_mean);
    o.kl = e;
    o.kl_beta = 0.3;
    INFO(rlcore::to_string(e));
    check_policy_gradients(b, o);
    o.kl_output_clamp = true;
    o.kl_output_min = -0.05; // active on part of the tokens for k1
    o.kl_output_max = 0.05;
    check_policy_gradients(b, o);
  }
}

TEST_CASE("straight-through KL: value of k1/k3, gradient of k2 (not the value's derivative)") {
  const auto b = rlcore_test::random_batch(2, 4, 404);
  policy_options plus = base_options(policy_loss::reinforce, aggregation::token_sum);
  plus.entropy_coef = 0;
  plus.kl_beta = 1;
  policy_options k2 = plus;
  k2.kl = rlcore::kl_estimator::k2;
  for (rlcore::kl_estimator e : {rlcore::kl_estimator::k1_plus, rlcore::kl_estimator::k3_plus}) {
    plus.kl = e;
    const auto rp = run_policy(b, plus);
    const auto r2 = run_policy(b, k2);
    for (std::size_t k = 0; k < rp.grad.size(); ++k) {
      CHECK(rp.grad[k] == doctest::Approx(r2.grad[k]).epsilon(1e-14));
    }
    CHECK(rp.loss != doctest::Approx(r2.loss)); // values differ (k1 or k3, not k2)
  }
}

TEST_CASE("finite differences: importance correction and entropy masking") {
  const auto b = rlcore_test::random_batch(4, 5, 505);
  for (auto level : {rlcore::importance_level::token, rlcore::importance_level::sequence}) {
    for (auto mode : {rlcore::importance_mode::truncate, rlcore::importance_mode::mask}) {
      for (policy_loss loss : {policy_loss::clipped, policy_loss::gmpo, policy_loss::sapo}) {
        policy_options o = base_options(loss, aggregation::seq_mean_token_mean);
        o.importance.level = level;
        o.importance.mode = mode;
        o.importance.cap = 1.3;
        o.importance.low = 0.8;
        o.importance.high = 1.25;
        check_policy_gradients(b, o);
        o.entropy_top_fraction = 0.5;
        check_policy_gradients(b, o);
      }
    }
  }
}

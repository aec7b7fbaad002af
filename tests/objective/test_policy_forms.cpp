// policy_objective on a hand-derived 2 x 3 batch, one case per loss form, aggregation mode and
// option (KL penalty, entropy bonus, importance correction, entropy masking).
//
// The batch (row 1 has a masked interior slot whose inputs are inf / NaN):
//   row 0, A = +1: ratios 1.5, 0.9, 1.0   lp = -1, -2, -0.5
//   row 1, A = -1: ratios 0.5, (masked), 1.1   lp = -1.5, inf, -0.3
// Clipped surrogate (eps 0.2) per token, l = max(-A r, -A clip(r, 0.8, 1.2)), dl/dlp:
//   (0,0) max(-1.5, -1.2) = -1.2 clipped high, 0     (0,1) max(-0.9, -0.9) = -0.9 tie, -0.9
//   (0,2) -1 (r = 1), -1                              (1,0) max(0.5, 0.8) = 0.8 clipped low, 0
//   (1,2) max(1.1, 1.1) = 1.1, 1.1
// Sum = -3.1 + 1.9 = -1.2 over 5 valid tokens; n_0 = 3, n_1 = 2.
#include "objective_test_util.hpp"

#include <cmath>
#include <limits>

using rlcore::aggregation;
using rlcore::policy_loss;
using rlcore::policy_options;
using rlcore_test::policy_batch;
using rlcore_test::run_policy;

namespace {

const double inf = std::numeric_limits<double>::infinity();
const double nan = std::numeric_limits<double>::quiet_NaN();

policy_batch hand_batch() {
  policy_batch b;
  b.rows = 2;
  b.cols = 3;
  b.mask = {1, 1, 1, 1, 0, 1};
  b.log_probs = {-1, -2, -0.5, -1.5, inf, -0.3};
  const double deltas[] = {std::log(1.5), std::log(0.9), 0.0, std::log(0.5), 0.0, std::log(1.1)};
  b.old_log_probs.resize(6);
  for (int k = 0; k < 6; ++k) {
    b.old_log_probs[k] = b.log_probs[k] - deltas[k];
  }
  b.old_log_probs[4] = nan;
  b.advantages = {1, 1, 1, -1, inf, -1};
  b.ref_log_probs = b.log_probs; // KL 0 unless a test changes it
  b.ref_log_probs[4] = -inf;
  b.entropy = {1, 2, 3, 4, 9, 5};
  b.rollout_log_probs = b.old_log_probs; // importance weights 1
  return b;
}

policy_options with_aggregation(aggregation mode) {
  policy_options o;
  o.aggregation.mode = mode;
  return o;
}

void check_vector(const std::vector<double>& got, const std::vector<double>& expected) {
  REQUIRE(got.size() == expected.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    INFO("slot ", k);
    CHECK(got[k] == doctest::Approx(expected[k]).epsilon(1e-12));
  }
}

} // namespace

TEST_CASE("clipped surrogate, token_mean: value, gradient, metrics") {
  const auto r = run_policy(hand_batch(), with_aggregation(aggregation::token_mean));
  CHECK(r.loss == doctest::Approx(-1.2 / 5));
  check_vector(r.grad, {0, -0.9 / 5, -1.0 / 5, 0, 0, 1.1 / 5});
  check_vector(r.grad_entropy, {0, 0, 0, 0, 0, 0}); // entropy_coef = 0
  CHECK(r.metrics.valid_tokens == 5);
  CHECK(r.metrics.clip_fraction_low == doctest::Approx(0.2));
  CHECK(r.metrics.clip_fraction_high == doctest::Approx(0.2));
  CHECK(r.metrics.clip_fraction == doctest::Approx(0.4));
  CHECK(r.metrics.dual_clip_fraction == 0);
  // approx KL = mean(-delta) = -(ln 1.5 + ln 0.9 + 0 + ln 0.5 + ln 1.1) / 5 = -ln(0.7425) / 5
  CHECK(r.metrics.approx_kl == doctest::Approx(-std::log(0.7425) / 5));
  // advantages 1, 1, 1, -1, -1: mean 0.2, population std sqrt(1 - 0.04)
  CHECK(r.metrics.advantage_mean == doctest::Approx(0.2));
  CHECK(r.metrics.advantage_std == doctest::Approx(std::sqrt(0.96)));
  CHECK(r.metrics.entropy_mean == doctest::Approx(3.0)); // (1 + 2 + 3 + 4 + 5) / 5
  CHECK(r.metrics.kl_penalty_mean == 0);
  CHECK(r.metrics.importance_weight_mean == doctest::Approx(1.0));
}

TEST_CASE("every aggregation mode on the hand batch") {
  auto r = run_policy(hand_batch(), with_aggregation(aggregation::token_sum));
  CHECK(r.loss == doctest::Approx(-1.2));
  check_vector(r.grad, {0, -0.9, -1.0, 0, 0, 1.1});
  r = run_policy(hand_batch(), with_aggregation(aggregation::seq_mean_token_sum));
  CHECK(r.loss == doctest::Approx(-0.6)); // -1.2 / N, N = 2
  check_vector(r.grad, {0, -0.45, -0.5, 0, 0, 0.55});
  r = run_policy(hand_batch(), with_aggregation(aggregation::seq_mean_token_mean));
  // (-3.1 / 3 + 1.9 / 2) / 2; weights 1/6 in row 0, 1/4 in row 1
  CHECK(r.loss == doctest::Approx((-3.1 / 3 + 1.9 / 2) / 2));
  check_vector(r.grad, {0, -0.9 / 6, -1.0 / 6, 0, 0, 1.1 / 4});
  auto o = with_aggregation(aggregation::seq_mean_token_sum_norm);
  o.aggregation.length_normalizer = 4;
  r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx(-1.2 / 8)); // / (N * L)
  check_vector(r.grad, {0, -0.9 / 8, -1.0 / 8, 0, 0, 1.1 / 8});
  o = with_aggregation(aggregation::token_mean);
  o.aggregation.global_tokens = 10;
  CHECK(run_policy(hand_batch(), o).loss == doctest::Approx(-0.12));
}

TEST_CASE("KL penalty and entropy bonus are added per token with the aggregation weight") {
  auto b = hand_batch();
  for (int k : {0, 1, 2, 3, 5}) {
    b.ref_log_probs[k] = b.log_probs[k] - std::log(2.0); // k3(ln 2) = 0.1931472, grad 0.5
  }
  policy_options o;
  o.kl_beta = 0.1;
  o.entropy_coef = 0.01;
  const auto r = run_policy(b, o);
  const double k3 = 0.5 + std::log(2.0) - 1;
  // loss = -1.2/5 + 0.1 * k3 - 0.01 * (15 / 5)
  CHECK(r.loss == doctest::Approx(-0.24 + 0.1 * k3 - 0.03));
  CHECK(r.metrics.policy_loss == doctest::Approx(-0.24));
  CHECK(r.metrics.kl_loss == doctest::Approx(0.1 * k3));
  CHECK(r.metrics.entropy_loss == doctest::Approx(-0.03));
  CHECK(r.metrics.kl_penalty_mean == doctest::Approx(k3));
  check_vector(r.grad, {0.01, -0.18 + 0.01, -0.2 + 0.01, 0.01, 0, 0.22 + 0.01});
  check_vector(r.grad_entropy, {-0.002, -0.002, -0.002, -0.002, 0, -0.002});
}

TEST_CASE("GSPO, sequence level: every token sees l_i, gradient s_i / n_i to each token") {
  // Row 0: s_0 = (1.5 * 0.9 * 1)^(1/3) = 1.35^(1/3), A_0 = 1, eps 0.2: unclipped, l_0 = -s_0.
  // Row 1: s_1 = (0.5 * 1.1)^(1/2) = sqrt(0.55) = 0.7416, A_1 = -1: max(0.7416, 0.8) = 0.8.
  policy_options o = with_aggregation(aggregation::seq_mean_token_mean);
  o.loss = policy_loss::gspo;
  o.gspo_eps_low = 0.2;
  o.gspo_eps_high = 0.2;
  const double s0 = std::cbrt(1.35);
  auto r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx((-s0 + 0.8) / 2));
  // d/dlp_t = (1/N) * d l_0 / d log s_0 * (1 / n_0) = -s0 / 6 on row 0; row 1 clipped: 0
  check_vector(r.grad, {-s0 / 6, -s0 / 6, -s0 / 6, 0, 0, 0});
  CHECK(r.metrics.clip_fraction_low == doctest::Approx(0.4)); // both row-1 tokens
  // token_mean: row 0 contributes 3 l_0 / 5, gradient 3 * (-s0) / 3 / 5 = -s0 / 5 per token
  o.aggregation.mode = aggregation::token_mean;
  r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx((-3 * s0 + 2 * 0.8) / 5));
  check_vector(r.grad, {-s0 / 5, -s0 / 5, -s0 / 5, 0, 0, 0});
  // default eps (3e-4 / 4e-4): s_0 > 1.0004 -> clipped, value -1.0004, zero gradient
  o = with_aggregation(aggregation::seq_mean_token_mean);
  o.loss = policy_loss::gspo;
  r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx((-1.0004 + (1 - 3e-4)) / 2));
  check_vector(r.grad, {0, 0, 0, 0, 0, 0});
}

TEST_CASE("GSPO, token level: value s_i, own advantage, gradient through the own token") {
  policy_options o = with_aggregation(aggregation::token_sum);
  o.loss = policy_loss::gspo;
  o.gspo = rlcore::gspo_level::token;
  o.gspo_eps_low = 0.2;
  o.gspo_eps_high = 0.2;
  const double s0 = std::cbrt(1.35);
  const auto r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx(-3 * s0 + 2 * 0.8));
  check_vector(r.grad, {-s0, -s0, -s0, 0, 0, 0});
}

TEST_CASE("GMPO: geometric mean of sign(A)-clipped ratios (log-space clip 0.4)") {
  // Row 0 (A = 1): log-ratios ln 1.5 = 0.405 -> 0.4 (clipped, gate 0), ln 0.9, 0;
  //   S_0 = exp((0.4 + ln 0.9) / 3), l_0 = -S_0.
  // Row 1 (A = -1): ln 0.5 -> -0.4 (clipped, gate 0), ln 1.1; S_1 = exp((-0.4 + ln 1.1) / 2),
  //   l_1 = +S_1. seq_mean_token_mean: loss = (l_0 + l_1) / 2;
  //   grad = (1/N) * (-A_i S_i) / n_i * gate_t.
  policy_options o = with_aggregation(aggregation::seq_mean_token_mean);
  o.loss = policy_loss::gmpo;
  const double S0 = std::exp((0.4 + std::log(0.9)) / 3);
  const double S1 = std::exp((-0.4 + std::log(1.1)) / 2);
  const auto r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx((-S0 + S1) / 2));
  check_vector(r.grad, {0, -S0 / 6, -S0 / 6, 0, 0, S1 / 4});
  CHECK(r.metrics.clip_fraction_high == doctest::Approx(0.2));
  CHECK(r.metrics.clip_fraction_low == doctest::Approx(0.2));
}

TEST_CASE("CISPO, REINFORCE and SAPO (token_sum)") {
  // CISPO: l = -min(r, 1.2) A lp: 1.2, 1.8, 0.5, -0.75, -0.33; grad -min(r, 1.2) A.
  policy_options o = with_aggregation(aggregation::token_sum);
  o.loss = policy_loss::cispo;
  auto r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx(1.2 + 1.8 + 0.5 - 0.75 - 0.33));
  check_vector(r.grad, {-1.2, -0.9, -1.0, 0.5, 0, 1.1});
  CHECK(r.metrics.clip_fraction_high == doctest::Approx(0.2));
  // REINFORCE: -A lp = 1, 2, 0.5, -1.5, -0.3; grad -A.
  o.loss = policy_loss::reinforce;
  r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx(1.7));
  check_vector(r.grad, {-1, -1, -1, 1, 0, 1});
  // SAPO: -A (4 / tau) sigmoid(tau (r - 1)), tau 1 (A > 0) / 1.05 (A < 0).
  o.loss = policy_loss::sapo;
  r = run_policy(hand_batch(), o);
  auto sig = [](double z) { return 1 / (1 + std::exp(-z)); };
  const double expected = -4 * sig(0.5) - 4 * sig(-0.1) - 4 * sig(0.0)
                          + (4 / 1.05) * sig(1.05 * -0.5) + (4 / 1.05) * sig(1.05 * 0.1);
  CHECK(r.loss == doctest::Approx(expected));
  // d/dlp = -4 A s (1 - s) r
  auto g = [&](double a, double tau, double ratio) {
    const double s = sig(tau * (ratio - 1));
    return -4 * a * s * (1 - s) * ratio;
  };
  check_vector(r.grad,
               {g(1, 1, 1.5), g(1, 1, 0.9), g(1, 1, 1.0), g(-1, 1.05, 0.5), 0, g(-1, 1.05, 1.1)});
}

TEST_CASE("dual clip at the objective level: metric and zero gradient") {
  policy_batch b;
  b.rows = 1;
  b.cols = 2;
  b.mask = {1, 1};
  b.log_probs = {-1, -1};
  b.old_log_probs = {-1 - std::log(4.0), -1 - std::log(2.0)}; // ratios 4 and 2
  b.advantages = {-1, -1};
  b.ref_log_probs = b.log_probs;
  b.entropy = {1, 1};
  b.rollout_log_probs = b.old_log_probs;
  policy_options o = with_aggregation(aggregation::token_sum);
  o.dual_clip = 3;
  const auto r = run_policy(b, o);
  CHECK(r.loss == doctest::Approx(3 + 2)); // min(4, 3) + 2
  check_vector(r.grad, {0, 2});
  CHECK(r.metrics.dual_clip_fraction == doctest::Approx(0.5));
}

TEST_CASE("importance-sampling correction: token/sequence level, truncate/mask") {
  auto b = hand_batch();
  b.rollout_log_probs[1] = b.old_log_probs[1] - std::log(3.0); // w(0,1) = 3, others 1
  policy_options o = with_aggregation(aggregation::token_sum);
  o.importance.level = rlcore::importance_level::token;
  // truncate at 2: (0,1) term -0.9 * 2
  auto r = run_policy(b, o);
  CHECK(r.loss == doctest::Approx(-1.2 - 1.8 - 1.0 + 0.8 + 1.1));
  check_vector(r.grad, {0, -1.8, -1.0, 0, 0, 1.1});
  CHECK(r.metrics.importance_corrected_fraction == doctest::Approx(0.2));
  CHECK(r.metrics.importance_weight_mean == doctest::Approx(6.0 / 5));
  // mask outside [0.5, 2]: (0,1) dropped
  o.importance.mode = rlcore::importance_mode::mask;
  r = run_policy(b, o);
  CHECK(r.loss == doctest::Approx(-1.2 - 1.0 + 0.8 + 1.1));
  check_vector(r.grad, {0, 0, -1.0, 0, 0, 1.1});
  // sequence level: w_0 = exp(sum(old - rollout)) = 3 -> truncated to 2 for all of row 0
  o.importance.level = rlcore::importance_level::sequence;
  o.importance.mode = rlcore::importance_mode::truncate;
  r = run_policy(b, o);
  CHECK(r.loss == doctest::Approx(2 * -3.1 + 1.9));
  check_vector(r.grad, {0, -1.8, -2.0, 0, 0, 1.1});
  // the KL penalty is not reweighted
  for (int k : {0, 1, 2, 3, 5}) {
    b.ref_log_probs[k] = b.log_probs[k] - 0.5;
  }
  o.kl_beta = 1;
  o.kl = rlcore::kl_estimator::k1;
  r = run_policy(b, o);
  CHECK(r.metrics.kl_loss == doctest::Approx(5 * 0.5));
}

TEST_CASE("entropy masking keeps the top-rho entropy tokens (torch.quantile interpolation)") {
  // valid entropies 1, 2, 3, 4, 5; rho = 0.4 -> quantile 0.6: position 2.4 -> 3.4;
  // kept: H = 4 (1,0) and H = 5 (1,2) -> policy terms 0.8 + 1.1.
  policy_options o = with_aggregation(aggregation::token_sum);
  o.entropy_top_fraction = 0.4;
  const auto r = run_policy(hand_batch(), o);
  CHECK(r.loss == doctest::Approx(1.9));
  check_vector(r.grad, {0, 0, 0, 0, 0, 1.1});
  CHECK(r.metrics.entropy_kept_fraction == doctest::Approx(0.4));
}

TEST_CASE("the short overload and policy_inputs without optional tensors agree") {
  const auto b = hand_batch();
  std::vector<double> g1(6, -9), g2(6, -9);
  auto v = [&](const std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 2, 3); };
  auto layout = rlcore::padded(v(b.mask));
  const auto r1 =
      rlcore::policy_objective(layout, v(b.log_probs), v(b.old_log_probs), v(b.advantages),
                               rlcore::make_matrix_view(g1.data(), 2, 3));
  const auto r2 = rlcore::policy_objective(
      layout, rlcore::policy_inputs{v(b.log_probs), v(b.old_log_probs), v(b.advantages)},
      rlcore::make_matrix_view(g2.data(), 2, 3), rlcore::none);
  CHECK(r1.loss == doctest::Approx(-0.24));
  CHECK(r1.loss == r2.loss);
  CHECK(g1 == g2);
  CHECK(r1.metrics.kl_penalty_mean == 0);
}

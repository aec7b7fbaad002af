// grpo_objective: DeepSeekMath eq. 3 by hand, equivalence with policy_objective, on-policy
// behaviour (ratio = 1: only the advantage and the KL drive the gradient).
#include "objective_test_util.hpp"

#include <rlcore/objective/grpo.hpp>

#include <cmath>

TEST_CASE("grpo_objective: one group of G = 2 by hand") {
  // o_1: 2 tokens, A = 1, ratios 1.5 and 1 (clip 0.2), lp - ref = ln 2 on both:
  //   clipped terms -1.2 and -1; k3 = 0.1931472 each; row mean (-2.2 + 0.08 k3... ) / 2
  // o_2: 1 token, A = -1, ratio 0.5 -> 0.8 (clipped), lp - ref = 0 -> k3 = 0.
  // loss = (1/2) [ (-1.2 - 1 + 2 * 0.04 * k3) / 2 + 0.8 / 1 ]
  std::vector<int> offsets{0, 2, 3};
  const double k3 = 0.5 + std::log(2.0) - 1;
  std::vector<double> lp{-1, -2, -1};
  std::vector<double> old{-1 - std::log(1.5), -2, -1 - std::log(0.5)};
  std::vector<double> ref{-1 - std::log(2.0), -2 - std::log(2.0), -1};
  std::vector<double> adv{1, 1, -1};
  std::vector<double> grad(3);
  const auto r = rlcore::grpo_objective(rlcore::packed(offsets), lp, old, ref, adv, grad);
  CHECK(r.loss == doctest::Approx(0.5 * ((-2.2 + 2 * 0.04 * k3) / 2 + 0.8)));
  // gradients: row 0 weight 1/4: (0 + 0.04 * 0.5) / 4, (-1 + 0.04 * 0.5) / 4; row 1: 0 (clipped)
  CHECK(grad[0] == doctest::Approx(0.02 / 4));
  CHECK(grad[1] == doctest::Approx(-0.98 / 4));
  CHECK(grad[2] == doctest::Approx(0.0));
  CHECK(r.metrics.kl_penalty_mean == doctest::Approx(2 * k3 / 3));
}

TEST_CASE("grpo_objective equals policy_objective with the equivalent options") {
  const auto b = rlcore_test::random_batch(4, 6, 1515);
  auto view = [&](const std::vector<double>& x) {
    return rlcore::make_matrix_view(x.data(), 4, 6);
  };
  std::vector<double> grad(24);
  rlcore::grpo_options g;
  g.eps = 0.15;
  const auto r = rlcore::grpo_objective(
      rlcore::padded(view(b.mask)), view(b.log_probs), view(b.old_log_probs), view(b.ref_log_probs),
      view(b.advantages), rlcore::make_matrix_view(grad.data(), 4, 6), g);
  const auto expected = rlcore_test::run_policy(b, g.as_policy_options());
  CHECK(r.loss == expected.loss);
  CHECK(grad == expected.grad);
  CHECK(g.as_policy_options().aggregation.mode == rlcore::aggregation::seq_mean_token_mean);
  CHECK(g.as_policy_options().kl_beta == 0.04);
}

TEST_CASE("on-policy GRPO (old = lp): gradient = w * (-A + beta * (1 - ref / pi))") {
  auto b = rlcore_test::random_batch(3, 5, 1616);
  b.old_log_probs = b.log_probs;
  auto view = [&](const std::vector<double>& x) {
    return rlcore::make_matrix_view(x.data(), 3, 5);
  };
  std::vector<double> grad(15);
  const auto r = rlcore::grpo_objective(
      rlcore::padded(view(b.mask)), view(b.log_probs), view(b.old_log_probs), view(b.ref_log_probs),
      view(b.advantages), rlcore::make_matrix_view(grad.data(), 3, 5));
  CHECK(r.metrics.clip_fraction == 0);
  for (rlcore::index_t i = 0; i < 3; ++i) {
    double n = 0;
    for (rlcore::index_t t = 0; t < 5; ++t) {
      n += b.mask[static_cast<std::size_t>(i * 5 + t)];
    }
    for (rlcore::index_t t = 0; t < 5; ++t) {
      const auto k = static_cast<std::size_t>(i * 5 + t);
      const double expected =
          b.mask[k] == 0
              ? 0.0
              : (-b.advantages[k] + 0.04 * (1 - std::exp(b.ref_log_probs[k] - b.log_probs[k])))
                    / (3 * n);
      CHECK(grad[k] == doctest::Approx(expected).epsilon(1e-13));
    }
  }
}

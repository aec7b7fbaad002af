// kl_penalty_loss and apply_kl_to_rewards: hand values, finite differences, masks, validation.
#include "objective_test_util.hpp"

#include <rlcore/objective/kl_penalty.hpp>

#include <cmath>
#include <limits>

using rlcore::kl_estimator;
using rlcore_test::check_invalid;

TEST_CASE("kl_penalty_loss: hand values (k3, token_mean) and masked slots") {
  // two valid tokens with lp - ref = ln 2 and -ln 2: k3 = 0.1931472 and 0.3068528, mean 0.25;
  // gradients 0.5 / 2 and -1 / 2. The masked slot holds inf.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> mask{1, 0, 1};
  std::vector<double> lp{0, inf, 0};
  std::vector<double> ref{-std::log(2.0), -inf, std::log(2.0)};
  std::vector<double> grad(3, -9);
  auto v = [](std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 1, 3); };
  const auto r = rlcore::kl_penalty_loss(rlcore::padded(v(mask)), v(lp), v(ref), v(grad));
  CHECK(r.loss == doctest::Approx(0.25));
  CHECK(r.kl_mean == doctest::Approx(0.25));
  CHECK(r.valid_tokens == 2);
  CHECK(grad[0] == doctest::Approx(0.25));
  CHECK(grad[1] == 0.0);
  CHECK(grad[2] == doctest::Approx(-0.5));
}

TEST_CASE("kl_penalty_loss: finite differences for every estimator and aggregation") {
  const auto b = rlcore_test::random_batch(4, 5, 1313);
  auto v = [&](const std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 4, 5); };
  for (kl_estimator e : {kl_estimator::k1, kl_estimator::abs, kl_estimator::k2, kl_estimator::k3,
                         kl_estimator::k3_importance}) {
    for (auto mode : {rlcore::aggregation::token_mean, rlcore::aggregation::seq_mean_token_mean}) {
      rlcore::kl_penalty_options o;
      o.estimator = e;
      o.aggregation.mode = mode;
      std::vector<double> grad(20);
      (void)rlcore::kl_penalty_loss(rlcore::padded(v(b.mask)), v(b.log_probs), v(b.old_log_probs),
                                    v(b.ref_log_probs), rlcore::make_matrix_view(grad.data(), 4, 5),
                                    o);
      INFO(rlcore::to_string(e));
      rlcore_test::check_gradient(
          [&](const std::vector<double>& lp) {
            std::vector<double> g(20);
            return rlcore::kl_penalty_loss(rlcore::padded(v(b.mask)), v(lp), v(b.old_log_probs),
                                           v(b.ref_log_probs),
                                           rlcore::make_matrix_view(g.data(), 4, 5), o)
                .loss;
          },
          b.log_probs, grad);
    }
  }
}

TEST_CASE("kl_penalty_loss: output clamp and packed layout") {
  std::vector<int> offsets{0, 2};
  std::vector<double> lp{0, 0}, ref{5, 0.1}, grad(2);
  rlcore::kl_penalty_options o;
  o.output_clamp = true; // k3(-5) = e^5 - 6 = 142.4 -> 10, gradient 0
  o.aggregation.mode = rlcore::aggregation::token_sum;
  const auto r = rlcore::kl_penalty_loss(rlcore::packed(offsets), lp, ref, grad, o);
  CHECK(r.loss == doctest::Approx(10 + std::exp(0.1) - 0.1 - 1));
  CHECK(grad[0] == 0.0);
  CHECK(grad[1] == doctest::Approx(1 - std::exp(0.1)));
}

TEST_CASE("apply_kl_to_rewards: r -= beta * KL at valid tokens only; returns the mean KL") {
  std::vector<double> mask{1, 0, 1};
  std::vector<double> rewards{1, 7, 0};
  std::vector<double> lp{-1, -1, -2};
  std::vector<double> ref{-1.5, -9, -1};
  auto v = [](std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 1, 3); };
  // k1: x = 0.5 and -1 -> rewards 1 - 0.1 * 0.5 = 0.95, 0 + 0.1 = 0.1; mean KL -0.25
  const double mean = rlcore::apply_kl_to_rewards(rlcore::padded(v(mask)), v(rewards), v(lp),
                                                  v(ref), 0.1, kl_estimator::k1);
  CHECK(mean == doctest::Approx(-0.25));
  CHECK(rewards[0] == doctest::Approx(0.95));
  CHECK(rewards[1] == 7.0);
  CHECK(rewards[2] == doctest::Approx(0.1));
  // k3 at x = -1: e - 2 = 0.7182818
  std::vector<double> r2{0, 0, 0};
  (void)rlcore::apply_kl_to_rewards(rlcore::padded(v(mask)), v(r2), v(lp), v(ref), 1.0,
                                    kl_estimator::k3);
  CHECK(r2[2] == doctest::Approx(-(std::exp(1.0) - 2)));
}

TEST_CASE("KL penalty validation rules") {
  std::vector<double> x(3), g(3), wrong(4);
  std::vector<int> offsets{0, 3};
  auto layout = rlcore::packed(offsets);
  check_invalid([&] { (void)rlcore::kl_penalty_loss(layout, x, wrong, g); }, "ref_log_probs",
                "expected 3 packed tokens (offsets[N]), got 4");
  rlcore::kl_penalty_options o;
  o.estimator = kl_estimator::k3_importance;
  check_invalid([&] { (void)rlcore::kl_penalty_loss(layout, x, x, g, o); }, "old_log_probs",
                "expected old_log_probs for the k3_importance estimator");
  o.estimator = static_cast<kl_estimator>(12);
  check_invalid([&] { (void)rlcore::kl_penalty_loss(layout, x, x, g, o); }, "options.estimator",
                "got 12");
  o.estimator = kl_estimator::k3;
  o.log_ratio_clamp = -1;
  check_invalid([&] { (void)rlcore::kl_penalty_loss(layout, x, x, g, o); },
                "options.log_ratio_clamp", "expected 0 < clamp <= 80, got -1");
  o.log_ratio_clamp = 20;
  o.output_clamp = true;
  o.output_min = 3;
  o.output_max = 2;
  check_invalid([&] { (void)rlcore::kl_penalty_loss(layout, x, x, g, o); }, "options.output_min",
                "expected output_min <= output_max, got 3 > 2");
  check_invalid([&] { (void)rlcore::apply_kl_to_rewards(layout, g, x, x, -0.1); }, "beta",
                "expected finite beta >= 0, got -0.1");
  check_invalid(
      [&] { (void)rlcore::apply_kl_to_rewards(layout, g, x, x, 0.1, kl_estimator::k3_importance); },
      "estimator", "got k3_importance");
  check_invalid([&] { (void)rlcore::apply_kl_to_rewards(layout, wrong, x, x, 0.1); },
                "token_rewards_inout", "got 4");
}

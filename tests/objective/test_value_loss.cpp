// value_loss: hand values, clip fraction, finite differences, masks, validation.
#include "objective_test_util.hpp"

#include <rlcore/objective/value_loss.hpp>

#include <cmath>
#include <limits>

using rlcore_test::check_invalid;

TEST_CASE("value_loss: hand values (c = 0.5, token_mean)") {
  // token 0: v = 1, old = 0, R = 2 -> clipped branch 0.5 * 1.5^2 = 1.125 wins, gradient 0
  // token 1: v = 1, old = 0, R = 0 -> 0.5, gradient (v - R) / 2 = 0.5
  // token 2: masked (inf values)
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> mask{1, 1, 0}, v{1, 1, inf}, old{0, 0, -inf}, ret{2, 0, inf}, grad(3, -9);
  auto m = [](std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 1, 3); };
  const auto r = rlcore::value_loss(rlcore::padded(m(mask)), m(v), m(old), m(ret), m(grad));
  CHECK(r.loss == doctest::Approx((1.125 + 0.5) / 2));
  CHECK(r.clip_fraction == doctest::Approx(0.5));
  CHECK(r.value_mean == doctest::Approx(1.0));
  CHECK(r.valid_tokens == 2);
  CHECK(grad[0] == 0.0);
  CHECK(grad[1] == doctest::Approx(0.5));
  CHECK(grad[2] == 0.0);
}

TEST_CASE("value_loss: finite differences (random, every aggregation) and clip off") {
  const auto b = rlcore_test::random_batch(4, 6, 1414);
  auto view = [&](const std::vector<double>& x) {
    return rlcore::make_matrix_view(x.data(), 4, 6);
  };
  for (auto mode : {rlcore::aggregation::token_mean, rlcore::aggregation::token_sum,
                    rlcore::aggregation::seq_mean_token_mean}) {
    for (double clip : {0.1, 0.3, std::numeric_limits<double>::infinity()}) {
      rlcore::value_loss_options o;
      o.clip = clip;
      o.aggregation.mode = mode;
      // values = log_probs, old = old_log_probs, returns = ref_log_probs (random, distinct)
      std::vector<double> grad(24);
      const auto r =
          rlcore::value_loss(rlcore::padded(view(b.mask)), view(b.log_probs), view(b.old_log_probs),
                             view(b.ref_log_probs), rlcore::make_matrix_view(grad.data(), 4, 6), o);
      if (std::isinf(clip)) {
        CHECK(r.clip_fraction == 0);
      }
      rlcore_test::check_gradient(
          [&](const std::vector<double>& values) {
            std::vector<double> g(24);
            return rlcore::value_loss(rlcore::padded(view(b.mask)), view(values),
                                      view(b.old_log_probs), view(b.ref_log_probs),
                                      rlcore::make_matrix_view(g.data(), 4, 6), o)
                .loss;
          },
          b.log_probs, grad);
    }
  }
}

TEST_CASE("value_loss validation rules") {
  std::vector<float> x(3), g(3), wrong(2);
  std::vector<int> offsets{0, 3};
  auto layout = rlcore::packed(offsets);
  check_invalid([&] { (void)rlcore::value_loss(layout, x, wrong, x, g); }, "old_values",
                "expected 3 packed tokens (offsets[N]), got 2");
  check_invalid([&] { (void)rlcore::value_loss(layout, x, x, x, wrong); }, "grad_values_out",
                "got 2");
  rlcore::value_loss_options o;
  o.clip = -0.5;
  check_invalid([&] { (void)rlcore::value_loss(layout, x, x, x, g, o); }, "options.clip",
                "expected clip range >= 0 (+inf = off), got -0.5");
  o.clip = 0.5;
  o.aggregation.global_tokens = 1;
  check_invalid([&] { (void)rlcore::value_loss(layout, x, x, x, g, o); },
                "aggregation.global_tokens", "local number of valid tokens 3, got 1");
}

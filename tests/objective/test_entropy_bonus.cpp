// entropy_bonus_loss: hand values, agreement with policy_objective's entropy term, validation.
#include "objective_test_util.hpp"

#include <rlcore/objective/entropy_bonus.hpp>

#include <limits>

TEST_CASE("entropy_bonus_loss: hand values (seq_mean_token_mean) and masked slots") {
  // row 0: 1, 3, masked; row 1: 2, 4, 6. seq_mean_token_mean: (2 + 4) / 2 = 3; loss = -0.1 * 3.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> mask{1, 1, 0, 1, 1, 1}, h{1, 3, inf, 2, 4, 6}, grad(6, -9);
  auto v = [](std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 2, 3); };
  rlcore::entropy_bonus_options o;
  o.coef = 0.1;
  o.aggregation.mode = rlcore::aggregation::seq_mean_token_mean;
  const auto r = rlcore::entropy_bonus_loss(rlcore::padded(v(mask)), v(h), v(grad), o);
  CHECK(r.loss == doctest::Approx(-0.3));
  CHECK(r.entropy_mean == doctest::Approx(16.0 / 5));
  CHECK(grad[0] == doctest::Approx(-0.1 / 4)); // -coef / (N n_0)
  CHECK(grad[2] == 0.0);
  CHECK(grad[3] == doctest::Approx(-0.1 / 6));
}

TEST_CASE("entropy_bonus_loss equals policy_objective's entropy term") {
  const auto b = rlcore_test::random_batch(4, 5, 1717);
  rlcore::policy_options po;
  po.entropy_coef = 0.03;
  po.aggregation.mode = rlcore::aggregation::seq_mean_token_sum;
  const auto full = rlcore_test::run_policy(b, po);
  std::vector<double> grad(20);
  rlcore::entropy_bonus_options o;
  o.coef = 0.03;
  o.aggregation = po.aggregation;
  const auto r =
      rlcore::entropy_bonus_loss(rlcore::padded(rlcore::make_matrix_view(b.mask.data(), 4, 5)),
                                 rlcore::make_matrix_view(b.entropy.data(), 4, 5),
                                 rlcore::make_matrix_view(grad.data(), 4, 5), o);
  CHECK(r.loss == doctest::Approx(full.metrics.entropy_loss).epsilon(1e-14));
  for (std::size_t k = 0; k < grad.size(); ++k) {
    CHECK(grad[k] == doctest::Approx(full.grad_entropy[k]).epsilon(1e-14));
  }
}

TEST_CASE("entropy_bonus_loss validation rules") {
  std::vector<float> h(3), g(3), wrong(2);
  std::vector<int> offsets{0, 3};
  auto layout = rlcore::packed(offsets);
  rlcore_test::check_invalid([&] { (void)rlcore::entropy_bonus_loss(layout, wrong, g); }, "entropy",
                             "expected 3 packed tokens (offsets[N]), got 2");
  rlcore::entropy_bonus_options o;
  o.coef = std::numeric_limits<double>::infinity();
  rlcore_test::check_invalid([&] { (void)rlcore::entropy_bonus_loss(layout, h, g, o); },
                             "options.coef", "expected a finite coefficient, got inf");
}

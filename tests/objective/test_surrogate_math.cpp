// Policy-loss and value-loss formulas (math/surrogate.hpp, math/value.hpp): hand-derived values,
// the tie convention at clip boundaries, and finite-difference gradients.
#include "objective_test_util.hpp"

#include <rlcore/math/surrogate.hpp>
#include <rlcore/math/value.hpp>

#include <cmath>
#include <limits>

namespace m = rlcore::math;

TEST_CASE("clipped surrogate: the four regions (eps 0.2)") {
  // A = 1, ratio 1.5: max(-1.5, -1.2) = -1.2, clipped high, gradient 0.
  auto t = m::clipped_surrogate(std::log(1.5), 1.0, 0.2, 0.2, 0.0, 0.0);
  CHECK(t.value == doctest::Approx(-1.2));
  CHECK(t.gradient == 0.0);
  CHECK(t.clipped_high);
  CHECK_FALSE(t.clipped_low);
  // A = 1, ratio 0.5: max(-0.5, -0.8) = -0.5, unclipped, gradient -A * ratio = -0.5.
  t = m::clipped_surrogate(std::log(0.5), 1.0, 0.2, 0.2, 0.0, 0.0);
  CHECK(t.value == doctest::Approx(-0.5));
  CHECK(t.gradient == doctest::Approx(-0.5));
  CHECK_FALSE(t.clipped_low);
  // A = -1, ratio 0.5: max(0.5, 0.8) = 0.8, clipped low, gradient 0.
  t = m::clipped_surrogate(std::log(0.5), -1.0, 0.2, 0.2, 0.0, 0.0);
  CHECK(t.value == doctest::Approx(0.8));
  CHECK(t.gradient == 0.0);
  CHECK(t.clipped_low);
  // A = -1, ratio 1.5: max(1.5, 1.2) = 1.5, gradient -A * ratio = 1.5.
  t = m::clipped_surrogate(std::log(1.5), -1.0, 0.2, 0.2, 0.0, 0.0);
  CHECK(t.value == doctest::Approx(1.5));
  CHECK(t.gradient == doctest::Approx(1.5));
}

TEST_CASE("clipped surrogate: ties (ratio on a boundary, ratio = 1) take the unclipped gradient") {
  // ratio = 1: both branches equal -A, gradient -A.
  auto t = m::clipped_surrogate(0.0, 2.0, 0.2, 0.2, 0.0, 0.0);
  CHECK(t.value == -2.0);
  CHECK(t.gradient == -2.0);
  // Upper boundary exactly: r = exp(d) in [1, 2], eps_high = r - 1 is exact (Sterbenz), so
  // 1 + eps_high == r; A = 1: the clipped branch equals the unclipped one -> gradient -r, not 0.
  const double r = std::exp(std::log(1.3));
  t = m::clipped_surrogate(std::log(1.3), 1.0, 0.2, r - 1.0, 0.0, 0.0);
  CHECK(t.gradient == -r);
  CHECK_FALSE(t.clipped_high);
  // Lower boundary exactly: r in [0.5, 1], eps_low = 1 - r exact; A = -1: gradient r.
  const double q = std::exp(std::log(0.7));
  t = m::clipped_surrogate(std::log(0.7), -1.0, 1.0 - q, 0.2, 0.0, 0.0);
  CHECK(t.gradient == q);
  CHECK_FALSE(t.clipped_low);
}

TEST_CASE("dual clip and delta clip") {
  // Dual clip c = 3, A = -1, ratio 4: max(4, 1.2) = 4 > 3 = -c A -> 3, gradient 0.
  auto t = m::clipped_surrogate(std::log(4.0), -1.0, 0.2, 0.2, 3.0, 0.0);
  CHECK(t.value == doctest::Approx(3.0));
  CHECK(t.gradient == 0.0);
  CHECK(t.dual_clipped);
  // ratio 2: 2 < 3, unchanged, gradient 2.
  t = m::clipped_surrogate(std::log(2.0), -1.0, 0.2, 0.2, 3.0, 0.0);
  CHECK(t.value == doctest::Approx(2.0));
  CHECK(t.gradient == doctest::Approx(2.0));
  CHECK_FALSE(t.dual_clipped);
  // Dual clip never applies for A > 0: A = 1, ratio 0.1 -> -0.1.
  t = m::clipped_surrogate(std::log(0.1), 1.0, 0.2, 0.2, 3.0, 0.0);
  CHECK(t.value == doctest::Approx(-0.1));
  // Delta clip 1.4, A = -1, ratio 2: unclipped branch -A * min(2, 1.4) = 1.4 > 1.2 -> 1.4, grad 0.
  t = m::clipped_surrogate(std::log(2.0), -1.0, 0.2, 0.2, 0.0, 1.4);
  CHECK(t.value == doctest::Approx(1.4));
  CHECK(t.gradient == 0.0);
  // ratio 1.3 < 1.4: 1.3, gradient 1.3.
  t = m::clipped_surrogate(std::log(1.3), -1.0, 0.2, 0.2, 0.0, 1.4);
  CHECK(t.value == doctest::Approx(1.3));
  CHECK(t.gradient == doctest::Approx(1.3));
}

TEST_CASE("SAPO soft gate: hand values") {
  // ratio 1, A = 1, tau 1: -4 * sigmoid(0) = -2; gradient -4 * 1/4 * 1 = -1.
  auto t = m::sapo_surrogate(0.0, 1.0, 1.0, 1.05);
  CHECK(t.value == doctest::Approx(-2.0));
  CHECK(t.gradient == doctest::Approx(-1.0));
  // ratio 1, A = -1, tau_neg 1.05: (4 / 1.05) * 0.5 = 1.9047619; gradient 4 * 1/4 = 1.
  t = m::sapo_surrogate(0.0, -1.0, 1.0, 1.05);
  CHECK(t.value == doctest::Approx(1.9047619047619047));
  CHECK(t.gradient == doctest::Approx(1.0));
  // ratio 2, A = 1: s = sigmoid(1) = 0.7310586; value -4 s = -2.9242344;
  // gradient -4 s (1 - s) * 2 = -8 * 0.1966119 = -1.5728955.
  t = m::sapo_surrogate(std::log(2.0), 1.0, 1.0, 1.05);
  CHECK(t.value == doctest::Approx(-2.9242344054659));
  CHECK(t.gradient == doctest::Approx(-1.5728954659));
  // huge ratio stays finite (gate saturated)
  const auto huge = m::sapo_surrogate(20.0f, 1.0f, 1.0f, 1.05f);
  CHECK(std::isfinite(huge.value));
  CHECK(huge.gradient == 0.0f);
}

TEST_CASE("CISPO, REINFORCE and GMPO's clipped log-ratio") {
  // CISPO eps_high 0.2, A = 1, lp = -2, ratio 1.5: weight 1.2, value 2.4, gradient -1.2.
  auto t = m::cispo_surrogate(std::log(1.5), -2.0, 1.0, 0.2);
  CHECK(t.value == doctest::Approx(2.4));
  CHECK(t.gradient == doctest::Approx(-1.2));
  CHECK(t.clipped_high);
  // ratio 0.5 (no lower clip): value 1.0, gradient -0.5.
  t = m::cispo_surrogate(std::log(0.5), -2.0, 1.0, 0.2);
  CHECK(t.value == doctest::Approx(1.0));
  CHECK(t.gradient == doctest::Approx(-0.5));
  // REINFORCE A = 2, lp = -3: 6, gradient -2.
  t = m::reinforce_surrogate(-3.0, 2.0);
  CHECK(t.value == 6.0);
  CHECK(t.gradient == -2.0);
  // GMPO: A > 0 clips delta above eps_high, A < 0 clips below -eps_low (log space, 0.4).
  auto g = m::gmpo_clip_log_ratio(0.5, 1.0, 0.4, 0.4);
  CHECK(g.value == 0.4);
  CHECK(g.gate == 0.0);
  CHECK(g.clipped_high);
  g = m::gmpo_clip_log_ratio(-1.0, 1.0, 0.4, 0.4);
  CHECK(g.value == -1.0);
  CHECK(g.gate == 1.0);
  g = m::gmpo_clip_log_ratio(-0.5, -1.0, 0.4, 0.4);
  CHECK(g.value == -0.4);
  CHECK(g.clipped_low);
  g = m::gmpo_clip_log_ratio(0.7, -1.0, 0.4, 0.4);
  CHECK(g.value == 0.7);
  CHECK(g.gate == 1.0);
  g = m::gmpo_clip_log_ratio(0.4, 1.0, 0.4, 0.4); // on the boundary: unclipped (tie)
  CHECK(g.gate == 1.0);
  CHECK(m::gmpo_clip_log_ratio(0.3, 0.0, 0.4, 0.4).value == 0.0);
}

TEST_CASE("importance weights: truncation and masking") {
  auto w = m::truncated_importance_weight(std::log(3.0), 2.0);
  CHECK(w.value == 2.0);
  CHECK(w.corrected);
  w = m::truncated_importance_weight(std::log(1.5), 2.0);
  CHECK(w.value == doctest::Approx(1.5));
  CHECK_FALSE(w.corrected);
  w = m::masked_importance_weight(std::log(3.0), 0.5, 2.0);
  CHECK(w.value == 0.0);
  CHECK(w.corrected);
  w = m::masked_importance_weight(std::log(0.25), 0.5, 2.0);
  CHECK(w.value == 0.0);
  w = m::masked_importance_weight(std::log(1.5), 0.5, 2.0);
  CHECK(w.value == doctest::Approx(1.5));
}

TEST_CASE("surrogate gradients match finite differences (random, away from kinks)") {
  const auto deltas = rlcore_test::uniform(60, -1.5, 1.5, 21);
  const auto advs = rlcore_test::uniform(60, -2, 2, 22);
  const double h = 1e-6;
  for (std::size_t k = 0; k < deltas.size(); ++k) {
    const double d = deltas[k];
    const double a = advs[k];
    const double r = std::exp(d);
    // skip the kinks of the clipped surrogate (within 1e-4 of 0.8, 1.2, the dual and delta clips)
    if (std::abs(r - 0.8) < 1e-4 || std::abs(r - 1.2) < 1e-4 || std::abs(r - 1.6) < 1e-4
        || std::abs(r * std::abs(a) - 3 * std::abs(a)) < 1e-4) {
      continue;
    }
    auto clipped = [&](double x) { return m::clipped_surrogate(x, a, 0.2, 0.2, 3.0, 1.6).value; };
    CHECK(m::clipped_surrogate(d, a, 0.2, 0.2, 3.0, 1.6).gradient
          == doctest::Approx((clipped(d + h) - clipped(d - h)) / (2 * h)).epsilon(1e-7));
    auto sapo = [&](double x) { return m::sapo_surrogate(x, a, 1.0, 1.05).value; };
    CHECK(m::sapo_surrogate(d, a, 1.0, 1.05).gradient
          == doctest::Approx((sapo(d + h) - sapo(d - h)) / (2 * h)).epsilon(1e-7));
  }
}

TEST_CASE("clipped value loss: hand values, tie and gradient") {
  // v = 1, old = 0, R = 2, c = 0.5: v_clip = 0.5; 0.5 * max(1, 2.25) = 1.125 (clipped), grad 0.
  auto t = m::clipped_value_loss(1.0, 0.0, 2.0, 0.5);
  CHECK(t.value == doctest::Approx(1.125));
  CHECK(t.gradient == 0.0);
  CHECK(t.clipped);
  // v = 1, old = 0, R = 0: 0.5 * max(1, 0.25) = 0.5, grad v - R = 1.
  t = m::clipped_value_loss(1.0, 0.0, 0.0, 0.5);
  CHECK(t.value == doctest::Approx(0.5));
  CHECK(t.gradient == 1.0);
  CHECK_FALSE(t.clipped);
  // inside the range: branches tie, unclipped gradient v - R = -0.8
  t = m::clipped_value_loss(0.2, 0.0, 1.0, 0.5);
  CHECK(t.gradient == doctest::Approx(-0.8));
  CHECK_FALSE(t.clipped);
  // clipping off (+inf)
  t = m::clipped_value_loss(1.0, 0.0, 2.0, std::numeric_limits<double>::infinity());
  CHECK(t.value == doctest::Approx(0.5));
  CHECK(t.gradient == -1.0);
}

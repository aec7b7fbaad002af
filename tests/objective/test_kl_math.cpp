// KL estimators (math/kl.hpp): hand-derived values, finite-difference gradients, the
// straight-through and importance forms, and both clamps.
#include "objective_test_util.hpp"

#include <rlcore/math/kl.hpp>

#include <algorithm>
#include <cmath>

namespace m = rlcore::math;
using rlcore::kl_estimator;

namespace {
constexpr double ln2 = 0.69314718055994531;
constexpr double clamp20 = 20.0;

double kl_value(kl_estimator e, double x, double d) {
  return m::kl_estimate(e, x, d, clamp20).value;
}
} // namespace

TEST_CASE("KL estimators: hand-derived values at x = +-ln 2") {
  // x = lp - ref = ln 2: pi / ref = 2, ref / pi = 1/2.
  //   k1 = ln 2, abs = ln 2, k2 = (ln 2)^2 / 2 = 0.2402265
  //   k3 = ref/pi - log(ref/pi) - 1 = 0.5 + ln 2 - 1 = 0.1931472, d k3 = 1 - 1/2 = 0.5
  CHECK(kl_value(kl_estimator::k1, ln2, 0) == doctest::Approx(ln2));
  CHECK(kl_value(kl_estimator::abs, ln2, 0) == doctest::Approx(ln2));
  CHECK(kl_value(kl_estimator::k2, ln2, 0) == doctest::Approx(0.2402265069591007));
  const auto k3 = m::kl_estimate(kl_estimator::k3, ln2, 0.0, clamp20);
  CHECK(k3.value == doctest::Approx(0.1931471805599453));
  CHECK(k3.gradient == doctest::Approx(0.5));
  // x = -ln 2: k3 = 2 - ln 2 - 1 = 0.3068528, d k3 = 1 - 2 = -1; abs gradient -1.
  const auto k3n = m::kl_estimate(kl_estimator::k3, -ln2, 0.0, clamp20);
  CHECK(k3n.value == doctest::Approx(0.3068528194400547));
  CHECK(k3n.gradient == doctest::Approx(-1.0));
  CHECK(m::kl_estimate(kl_estimator::abs, -ln2, 0.0, clamp20).gradient == -1.0);
  CHECK(m::kl_estimate(kl_estimator::abs, 0.0, 0.0, clamp20).gradient == 0.0);
}

TEST_CASE("KL straight-through variants: value of k1/k3, gradient of k2") {
  const double x = 0.7;
  const auto k1p = m::kl_estimate(kl_estimator::k1_plus, x, 0.0, clamp20);
  CHECK(k1p.value == doctest::Approx(0.7));
  CHECK(k1p.gradient == doctest::Approx(0.7)); // d (x^2/2) / dx = x
  const auto k3p = m::kl_estimate(kl_estimator::k3_plus, x, 0.0, clamp20);
  CHECK(k3p.value == doctest::Approx(std::exp(-0.7) + 0.7 - 1));
  CHECK(k3p.gradient == doctest::Approx(0.7));
}

TEST_CASE("KL importance-corrected k3: ratio * k3, gradient through both factors") {
  // d = lp - old = ln 1.5 (ratio 1.5), x = ln 2: value = 1.5 * 0.1931472 = 0.2897208;
  // gradient = ratio * k3 (d ratio / d lp = ratio) + ratio * (1 - e^-x) = 0.2897208 + 0.75.
  const auto k = m::kl_estimate(kl_estimator::k3_importance, ln2, std::log(1.5), clamp20);
  CHECK(k.value == doctest::Approx(0.2897207708399179));
  CHECK(k.gradient == doctest::Approx(1.0397207708399179));
}

TEST_CASE("KL gradients match central finite differences (random x, away from kinks)") {
  const auto xs = rlcore_test::uniform(40, -3, 3, 11);
  const auto ds = rlcore_test::uniform(40, -1, 1, 12);
  for (kl_estimator e : {kl_estimator::k1, kl_estimator::abs, kl_estimator::k2, kl_estimator::k3,
                         kl_estimator::k3_importance}) {
    for (std::size_t k = 0; k < xs.size(); ++k) {
      const double h = 1e-6;
      // lp moves both x = lp - ref and d = lp - old
      const double numeric =
          (kl_value(e, xs[k] + h, ds[k] + h) - kl_value(e, xs[k] - h, ds[k] - h)) / (2 * h);
      const double analytic = m::kl_estimate(e, xs[k], ds[k], clamp20).gradient;
      INFO(rlcore::to_string(e), " x = ", xs[k]);
      CHECK(analytic == doctest::Approx(numeric).epsilon(1e-7));
    }
  }
}

TEST_CASE("KL log-ratio clamp: value at the bound, gradient 0 outside, 1 on the boundary") {
  const auto outside = m::kl_estimate(kl_estimator::k1, 25.0, 0.0, clamp20);
  CHECK(outside.value == 20.0);
  CHECK(outside.gradient == 0.0);
  const auto boundary = m::kl_estimate(kl_estimator::k1, 20.0, 0.0, clamp20);
  CHECK(boundary.gradient == 1.0);
  // k3 at x = -1e4 would overflow without the clamp: exp(20) - 21.
  const auto far = m::kl_estimate(kl_estimator::k3, -1e4, 0.0, clamp20);
  CHECK(far.value == doctest::Approx(std::exp(20.0) - 21.0));
  CHECK(far.gradient == 0.0);
  const auto far_f = m::kl_estimate(kl_estimator::k3_importance, -1e4f, 1e4f, 20.0f);
  CHECK(std::isfinite(far_f.value));
  CHECK(std::isfinite(far_f.gradient));
}

TEST_CASE("KL output clamp (verl's [-10, 10]): bound value and zero gradient where active") {
  const auto k3 = m::kl_estimate(kl_estimator::k3, -5.0, 0.0, clamp20); // e^5 - 6 = 142.4
  const auto clamped = m::clamp_kl_output(k3, -10.0, 10.0);
  CHECK(clamped.value == 10.0);
  CHECK(clamped.gradient == 0.0);
  const auto inside =
      m::clamp_kl_output(m::kl_estimate(kl_estimator::k3, 0.5, 0.0, clamp20), -10.0, 10.0);
  CHECK(inside.gradient == doctest::Approx(1 - std::exp(-0.5)));
}

TEST_CASE_TEMPLATE("k3 is accurate near x = 0 (expm1, no cancellation)", T, float, double) {
  // k3(x) = x^2/2 - x^3/6 + ...; at x = 1e-4 the naive exp(-x) + x - 1 loses most digits in float.
  const T x = T(1e-4);
  const auto k3 = m::kl_k3(x);
  CHECK(double(k3.value) == doctest::Approx(0.5e-8 - 1e-12 / 6).epsilon(1e-3));
  CHECK(k3.value > T(0));
}

TEST_CASE_TEMPLATE("kl_k3_bounded: k3 within 1.5e-6 relative over a dense sweep of [-86, 86]", T,
                   float, double) {
  // reference k3(x) = e^-x + x - 1 in long double: a Taylor series near 0, expm1 elsewhere
  const auto reference = [](long double x) {
    if (std::fabs(x) >= 1e-3L) {
      return std::expm1(-x) + x;
    }
    long double term = x * x / 2;
    long double sum = 0;
    for (int j = 3; j <= 10; ++j) {
      sum += term;
      term *= -x / j;
    }
    return sum;
  };
  double worst = 0;
  double worst_gradient = 0;
  const auto check = [&](T x) {
    const m::value_and_gradient<T> k3 = m::kl_k3_bounded(x);
    const long double expected = reference(x);
    worst = std::max(worst, double(std::fabs((k3.value - expected) / expected)));
    const long double gradient = -std::expm1(-static_cast<long double>(x));
    worst_gradient = std::max(worst_gradient, double(std::fabs(k3.gradient - gradient)
                                                     / std::max(std::fabs(gradient), 1.0L)));
  };
  // every 2^-21 step of [-2, 2] (both sides of the switch at |x| = 0.34 and ln2 / 2), every
  // 2^-10 step of [-86, 86], and tiny values
  for (int j = -(1 << 22); j <= (1 << 22); ++j) {
    if (j != 0) {
      check(T(j) / T(1 << 21));
    }
  }
  for (int j = -86 * 1024; j <= 86 * 1024; ++j) {
    if (j != 0) {
      check(T(j) / T(1024));
    }
  }
  for (T x = T(1e-18); x < T(1e-3); x *= T(1.7)) {
    check(x);
    check(-x);
  }
  MESSAGE("k3 max relative error ", worst, ", gradient ", worst_gradient);
  CHECK(worst < (sizeof(T) == 4 ? 1.5e-6 : 1e-14)); // float measured 1.4e-6
  CHECK(worst > 0);                                 // the sweep ran
  // the gradient 1 - e^-x: relative to max(|gradient|, 1)
  CHECK(worst_gradient < (sizeof(T) == 4 ? 4e-7 : 1e-15));
  CHECK(m::kl_k3_bounded(T(0)).value == T(0));
  CHECK(m::kl_k3_bounded(T(0)).gradient == T(0));
}

// The host/device elementary functions: values and the edge cases the formulas rely on.
#include <rlcore/math/functions.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace m = rlcore::math;

TEST_CASE_TEMPLATE("elementary functions match the C library", T, float, double) {
  CHECK(m::exp(T(1)) == doctest::Approx(std::exp(1.0)).epsilon(1e-6));
  CHECK(m::log(T(2)) == doctest::Approx(std::log(2.0)).epsilon(1e-6));
  CHECK(m::expm1(T(1e-10)) == doctest::Approx(1e-10).epsilon(1e-6));
  CHECK(m::log1p(T(1e-10)) == doctest::Approx(1e-10).epsilon(1e-6));
  CHECK(m::sqrt(T(9)) == T(3));
  CHECK(m::abs(T(-2.5)) == T(2.5));
  CHECK(m::min(T(1), T(2)) == T(1));
  CHECK(m::max(T(1), T(2)) == T(2));
}

TEST_CASE_TEMPLATE("clamp and sign at and beyond their boundaries", T, float, double) {
  CHECK(m::clamp(T(3), T(-1), T(1)) == T(1));
  CHECK(m::clamp(T(-3), T(-1), T(1)) == T(-1));
  CHECK(m::clamp(T(0.5), T(-1), T(1)) == T(0.5));
  CHECK(m::clamp(T(1), T(-1), T(1)) == T(1)); // on the boundary: unchanged
  CHECK(std::isnan(m::clamp(std::numeric_limits<T>::quiet_NaN(), T(-1), T(1))));
  CHECK(m::sign(T(-0.0)) == T(0));
  CHECK(m::sign(T(1e-30)) == T(1));
  CHECK(m::sign(T(-7)) == T(-1));
}

TEST_CASE_TEMPLATE("isfinite separates finite from inf and NaN", T, float, double) {
  CHECK(m::isfinite(std::numeric_limits<T>::max()));
  CHECK_FALSE(m::isfinite(std::numeric_limits<T>::infinity()));
  CHECK_FALSE(m::isfinite(-std::numeric_limits<T>::infinity()));
  CHECK_FALSE(m::isfinite(std::numeric_limits<T>::quiet_NaN()));
}

TEST_CASE("exp_vectorizable_bounded: exp_vectorizable's bits on [-86, 86], NaN propagates") {
  // every 2^-12 step of [-86, 86] (and both ends): the one-factor scaling must give the same
  // float as the two-factor one (power-of-two products are exact for normal results)
  int mismatches = 0;
  for (int j = -86 * 4096; j <= 86 * 4096; ++j) {
    const float x = float(j) / 4096.0f;
    const float bounded = m::exp_vectorizable_bounded(x);
    const float general = m::exp_vectorizable(x);
    mismatches += std::memcmp(&bounded, &general, sizeof(float)) != 0 ? 1 : 0;
  }
  CHECK(mismatches == 0);
  CHECK(m::exp_vectorizable_bounded(-86.0f) == doctest::Approx(std::exp(-86.0)).epsilon(2e-7));
  CHECK(m::exp_vectorizable_bounded(80.0f) == doctest::Approx(std::exp(80.0)).epsilon(2e-7));
  CHECK(m::exp_vectorizable_bounded(0.0f) == 1.0f);
  CHECK(std::isnan(m::exp_vectorizable_bounded(std::numeric_limits<float>::quiet_NaN())));
  CHECK(m::exp_vectorizable_bounded(0.5) == m::exp(0.5)); // double: math::exp itself
}

TEST_CASE("exp_polynomial_bounded_split: exp's bits, and e^x - 1 - x as its polynomial part") {
  // every 2^-12 step of [-86, 86]: the value is exp_vectorizable_bounded's float
  int mismatches = 0;
  for (int j = -86 * 4096; j <= 86 * 4096; ++j) {
    const float x = float(j) / 4096.0f;
    const float split = rlcore::math::detail::exp_polynomial_bounded_split(x).value;
    const float bounded = m::exp_vectorizable_bounded(x);
    mismatches += std::memcmp(&split, &bounded, sizeof(float)) != 0 ? 1 : 0;
  }
  CHECK(mismatches == 0);
  // below reduced_bound the excess is e^x - 1 - x: against a long double Taylor series (12 terms
  // are below 1e-12 relative for |x| < 0.34), every 2^-16 step of (-0.34, 0.34) and tiny values
  constexpr float bound = rlcore::math::detail::exp_polynomial_split::reduced_bound;
  const auto reference = [](long double x) {
    long double term = x * x / 2;
    long double sum = 0;
    for (int j = 3; j <= 14; ++j) {
      sum += term;
      term *= x / j;
    }
    return sum;
  };
  double worst = 0;
  const auto check = [&](float x) {
    const long double expected = reference(x);
    const float excess = rlcore::math::detail::exp_polynomial_bounded_split(x).excess;
    worst = std::max(worst, double(std::fabs((excess - expected) / expected)));
  };
  for (int j = -int(bound * 65536); j <= int(bound * 65536); ++j) {
    if (j != 0) {
      check(float(j) / 65536.0f);
    }
  }
  for (float x = 1e-18f; x < 1e-4f; x *= 1.7f) {
    check(x);
    check(-x);
  }
  CHECK(worst < 3e-7); // measured 2.1e-7
  CHECK(worst > 0);    // the sweep ran
}

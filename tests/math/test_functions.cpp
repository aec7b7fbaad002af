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

// KL controllers: the adaptive update by hand (both clip sides), the fixed one, validation.
#include "../common/check_invalid.hpp"

#include <rlcore/control/kl_controller.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

using rlcore_test::check_invalid;

TEST_CASE("adaptive KL controller: e = clip(KL / target - 1, -0.2, 0.2), beta *= 1 + e n / H") {
  rlcore::adaptive_kl_controller c(0.1, 6.0, 10000.0);
  // KL = 3: e = clip(-0.5) = -0.2, n = 256: beta = 0.1 * (1 - 0.2 * 0.0256) = 0.099488
  c.update(3.0, 256);
  CHECK(c.value() == doctest::Approx(0.099488));
  // KL = 6.6: e = 0.1 (inside the clip), n = 1000: beta *= 1.01
  c.update(6.6, 1000);
  CHECK(c.value() == doctest::Approx(0.099488 * 1.01));
  // KL = 60: e = clip(9) = 0.2, n = 5000: beta *= 1.1
  const double before = c.value();
  c.update(60.0, 5000);
  CHECK(c.value() == doctest::Approx(before * 1.1));
  // at the target: unchanged; n = 0: unchanged
  const double at_target = c.value();
  c.update(6.0, 300);
  CHECK(c.value() == doctest::Approx(at_target));
  c.update(100.0, 0);
  CHECK(c.value() == at_target);
  // n > 5 H with e = -0.2 would flip the sign: floored at 0
  rlcore::adaptive_kl_controller d(0.1, 6.0, 10.0);
  d.update(0.0, 100);
  CHECK(d.value() == 0.0);
}

TEST_CASE("adaptive KL controller: beta finite and >= 0 at the extremes of accepted inputs") {
  // horizon 1 (the smallest accepted), n_steps 2^62, KL far above target: e = 0.2, factor
  // 1 + 0.2 * 2^62 = 9.2e17 per update; from beta = 1e300 the first update saturates at the largest
  // double, and later ones stay there.
  constexpr double largest = std::numeric_limits<double>::max();
  rlcore::adaptive_kl_controller up(1e300, 1e-300, 1.0);
  up.update(1e300, rlcore::index_t{1} << 62); // KL / target overflows to inf: e = clip(inf) = 0.2
  CHECK(up.value() == largest);
  up.update(1e300, rlcore::index_t{1} << 62);
  CHECK(up.value() == largest);
  // Then KL far below target with n > 5 H: the factor is negative, beta is floored at 0, and 0
  // stays 0 (0 * factor, never 0 * inf).
  up.update(-1e300, 1000);
  CHECK(up.value() == 0.0);
  up.update(1e300, rlcore::index_t{1} << 62);
  CHECK(up.value() == 0.0);
  // horizon 1, n = 1, e = 0.2: exactly * 1.2 per update; many updates saturate, never inf.
  rlcore::adaptive_kl_controller grow(1.0, 1.0, 1.0);
  for (int k = 0; k < 5000; ++k) {
    grow.update(100.0, 1);
    REQUIRE(std::isfinite(grow.value()));
  }
  CHECK(grow.value() == largest);
}

TEST_CASE("fixed KL controller ignores updates") {
  rlcore::fixed_kl_controller c(0.04);
  c.update(100.0, 1000);
  CHECK(c.value() == 0.04);
}

TEST_CASE("KL controller validation rules") {
  check_invalid([] { rlcore::fixed_kl_controller c(-1); }, "beta",
                "expected finite beta >= 0, got -1");
  check_invalid([] { rlcore::adaptive_kl_controller c(-0.1, 6, 100); }, "initial_beta", "got -0.1");
  check_invalid([] { rlcore::adaptive_kl_controller c(0.1, 0, 100); }, "target",
                "expected finite target > 0, got 0");
  check_invalid([] { rlcore::adaptive_kl_controller c(0.1, 6, -5); }, "horizon",
                "expected a finite horizon >= 1 (a number of steps), got -5");
  // A horizon below one step made n_steps / horizon overflow (4.94e-324: beta became inf).
  check_invalid([] { rlcore::adaptive_kl_controller c(0.1, 1, 4.94e-324); }, "horizon",
                "expected a finite horizon >= 1 (a number of steps), got 4.94066e-324");
  check_invalid([] { rlcore::adaptive_kl_controller c(0.1, 1, 0.5); }, "horizon", "got 0.5");
  check_invalid([] { rlcore::adaptive_kl_controller c(0.1, 1, INFINITY); }, "horizon", "got inf");
  rlcore::adaptive_kl_controller c(0.1, 6, 100);
  check_invalid([&] { c.update(std::nan(""), 10); }, "observed_kl", "expected a finite KL");
  check_invalid([&] { c.update(1.0, -1); }, "n_steps", "expected n_steps >= 0, got -1");
}

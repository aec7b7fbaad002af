// The scalar formulas behind the estimators (math/stats.hpp, math/advantage.hpp): two-pass
// moments, exactness for identical values, skipped entries, weighted means, the affine scan steps
// and DAPO's overlong penalty.
#include <rlcore/math/advantage.hpp>
#include <rlcore/math/stats.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

namespace m = rlcore::math;
using rlcore::index_t;

namespace {
struct at {
  const std::vector<double>* x;
  double operator()(index_t k) const { return (*x)[static_cast<size_t>(k)]; }
};
} // namespace

TEST_CASE("two-pass moments: hand values, both std kinds") {
  // {2, 4, 4, 4, 5, 5, 7, 9}: mean 5, squared deviations 32, population var 4, unbiased 32 / 7.
  const std::vector<double> x{2, 4, 4, 4, 5, 5, 7, 9};
  const auto pop = m::range_moments(0, 8, at{&x}, rlcore::std_kind::population);
  CHECK(pop.mean == 5.0);
  CHECK(pop.stddev == doctest::Approx(2.0));
  CHECK_FALSE(pop.constant);
  const auto unb = m::range_moments(0, 8, at{&x}, rlcore::std_kind::unbiased);
  CHECK(unb.stddev == doctest::Approx(std::sqrt(32.0 / 7.0)));
  // A sub-range [2, 5) = {4, 4, 5}: mean 13 / 3.
  CHECK(m::range_moments(2, 5, at{&x}, rlcore::std_kind::unbiased).mean
        == doctest::Approx(13.0 / 3.0));
  // Empty and single ranges: defined, zero spread.
  const auto empty = m::range_moments(3, 3, at{&x}, rlcore::std_kind::unbiased);
  CHECK(empty.count == 0);
  CHECK(empty.stddev == 0);
  const auto one = m::range_moments(7, 8, at{&x}, rlcore::std_kind::unbiased);
  CHECK(one.mean == 9.0);
  CHECK(one.stddev == 0.0);
}

TEST_CASE("identical values: the mean is the value and the deviation exactly 0") {
  // A one-pass mean of seven 0.1 is not 0.1 in binary floating point.
  for (double c : {0.1, -0.7, 1e30, 3.0e-300, 123456.789}) {
    for (index_t n : {2, 3, 7, 10, 1000}) {
      const std::vector<double> x(static_cast<size_t>(n), c);
      const auto r = m::range_moments(0, n, at{&x}, rlcore::std_kind::unbiased);
      CHECK(r.mean == c);
      CHECK(r.stddev == 0.0);
      CHECK(r.constant);
      // The corrected two-pass formulas alone (no constant shortcut) are exact as well.
      m::moment_sums pass1, pass2;
      for (double v : x) {
        pass1 += m::first_pass_term(v);
      }
      const double m1 = m::first_mean(pass1);
      for (double v : x) {
        pass2 += m::second_pass_term(v, m1, pass1.level);
      }
      // in units: 3e-300 is accumulated as 3e-300 * 2^600, the others as themselves
      const double unit = c == 3.0e-300 ? 0x1p-600 : 1.0;
      CHECK(m::unit_of(pass1.level) == unit);
      CHECK(c / unit - m::corrected_mean(m1, pass2) == 0.0);
      CHECK(m::corrected_split_mean(m1, pass2).lo == 0.0);
      CHECK(m::weighted_range_mean(0, n, at{&x}, [](index_t k) { return 1.0 + k % 3; }) == c);
    }
  }
}

TEST_CASE("moments of huge values stay finite (double accumulation)") {
  const std::vector<double> x{1e30, -1e30, 3e30};
  const auto r = m::range_moments(0, 3, at{&x}, rlcore::std_kind::population);
  CHECK(r.mean == doctest::Approx(1e30));
  CHECK(r.stddev == doctest::Approx(std::sqrt(8.0 / 3.0) * 1e30));
}

TEST_CASE("range_moments_if skips excluded (NaN) entries without reading them into a sum") {
  const std::vector<double> x{1, std::nan(""), 3};
  const auto r = m::range_moments_if(
      0, 3, at{&x}, [&](index_t k) { return !std::isnan(x[static_cast<size_t>(k)]); },
      rlcore::std_kind::unbiased);
  CHECK(r.count == 2);
  CHECK(r.mean == 2.0);
  CHECK(r.stddev == doctest::Approx(std::sqrt(2.0)));
}

TEST_CASE("variance: clamped at 0 and defined for n < 2") {
  CHECK(m::variance({1, 5, 0}, rlcore::std_kind::unbiased) == 0.0);
  CHECK(m::variance({1, 5, 0}, rlcore::std_kind::population) == 0.0);
  CHECK(m::variance({0, 0, 0}, rlcore::std_kind::population) == 0.0);
  // sum d^2 slightly below (sum d)^2 / n by rounding: clamped, never negative.
  CHECK(m::variance({2, 2, 1.9999999999999998}, rlcore::std_kind::unbiased) == 0.0);
  // {1, 3} around m1 = 0: sum d = 4, sum d^2 = 10: (10 - 8) / 1 = 2.
  CHECK(m::variance({2, 4, 10}, rlcore::std_kind::unbiased) == 2.0);
}

TEST_CASE("advantage formulas and affine steps") {
  CHECK(m::standardized_advantage(3, 1, 1, 1e-6, true) == doctest::Approx(2 / (1 + 1e-6)));
  CHECK(m::standardized_advantage(3, 1, 0, 1e-6, false) == 2.0);
  CHECK(m::leave_one_out_advantage(6, 3, 4) == 4.0); // 6 - (12 - 6) / 3
  CHECK(m::leave_one_out_advantage(6, 6, 1) == 0.0);
  CHECK(m::whitened(3, 1, 4, 0, false) == 1.0);
  CHECK(m::whitened(3, 1, 4, 0, true) == 2.0);
  const auto masked = m::gae_step(false, 0.9, 0.8, 5, 6, 7);
  CHECK(masked.first == 1.0);
  CHECK(masked.second == 0.0);
  const auto valid = m::gae_step(true, 0.9, 0.8, 1, 0.5, 1);
  CHECK(valid.first == doctest::Approx(0.72));
  CHECK(valid.second == doctest::Approx(1.4));
  CHECK(m::discounted_return_step(true, 0.5, 2).first == 0.5);
  CHECK(m::next_value_step(true, 3).second == 3.0);
  CHECK(m::next_value_step(true, 3).first == 0.0);
  CHECK(m::valid_count_step(false).second == 0.0);
}

TEST_CASE("DAPO overlong penalty at and around its breakpoints") {
  // Lmax 100, Lcache 20: 0 up to 80, linear to -1 at 100, -1 beyond.
  CHECK(m::overlong_penalty(0, 100, 20) == 0.0);
  CHECK(m::overlong_penalty(80, 100, 20) == 0.0);
  CHECK(m::overlong_penalty(81, 100, 20) == doctest::Approx(-0.05));
  CHECK(m::overlong_penalty(90, 100, 20) == doctest::Approx(-0.5));
  CHECK(m::overlong_penalty(100, 100, 20) == -1.0);
  CHECK(m::overlong_penalty(1e9, 100, 20) == -1.0);
}

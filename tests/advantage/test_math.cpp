// The scalar formulas behind the estimators (math/stats.hpp, math/advantage.hpp): two-pass
// moments, exactness for identical values, skipped entries, weighted means, the affine scan steps
// and DAPO's overlong penalty.
#include <rlcore/math/advantage.hpp>
#include <rlcore/math/stats.hpp>

#include <doctest/doctest.h>

#include <algorithm>
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
  CHECK(m::discounted_return_step(true, 0.5, 2).first == 0.5);
  CHECK(m::discounted_return_step(true, 0.5, 2).second == 2.0);
  CHECK(m::discounted_return_step(false, 0.5, 2).first == 1.0);
  CHECK(m::discounted_return_step(false, 0.5, 2).second == 0.0);
  CHECK(m::suffix_sum_step(3).first == 1.0);
  CHECK(m::suffix_sum_step(3).second == 3.0);
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

TEST_CASE("GAE one-number carry: hand-derived row, composition") {
  // gamma 0.5, lambda 0.5, tokens 0..3, token 2 masked; r = {1, 2, 100, 1}, V = {1, 2, 100, 4}:
  //   t = 3: A = 1 - 4 = -3,                      c = 4 + 0.5 * -3 = 2.5
  //   t = 2: masked, c stays 2.5
  //   t = 1: A = (2 - 2) + 0.5 * 2.5 = 1.25,      c = 2 + 0.5 * 1.25 = 2.625
  //   t = 0: A = (1 - 1) + 0.5 * 2.625 = 1.3125   (A_0 = r0 + 0.5 V1 - V0 + 0.25 A1 = 1.3125)
  const std::vector<double> r{1, 2, 100, 1};
  const std::vector<double> v{1, 2, 100, 4};
  const std::vector<bool> valid{true, true, false, true};
  m::gae_carry_map<double> map{};
  std::vector<double> exclusive_offset(4);
  for (int t = 3; t >= 0; --t) {
    exclusive_offset[static_cast<size_t>(t)] = map.offset;
    map = m::gae_carry_fold_token(map, static_cast<bool>(valid[static_cast<size_t>(t)]), 0.5, 0.5,
                                  0.25, r[static_cast<size_t>(t)], v[static_cast<size_t>(t)]);
  }
  CHECK(m::gae_advantage_from_carry(0.5, r[3], v[3], exclusive_offset[3]) == -3.0);
  CHECK(exclusive_offset[2] == 2.5);
  CHECK(m::gae_advantage_from_carry(0.5, r[1], v[1], exclusive_offset[1]) == 1.25);
  CHECK(m::gae_advantage_from_carry(0.5, r[0], v[0], exclusive_offset[0]) == 1.3125);
  CHECK(map.offset == m::gae_carry(0.5, 1.0, 1.3125));
  CHECK(map.multiplier == 0.25 * 0.25 * 0.25); // 3 valid tokens
  // Composition: the identity on either side, and two halves composed give the whole fold.
  const m::gae_carry_map<double> identity{};
  CHECK(m::gae_carry_then(identity, map).offset == map.offset);
  CHECK(m::gae_carry_then(map, identity).multiplier == map.multiplier);
  m::gae_carry_map<double> later{};
  for (int t = 3; t >= 2; --t) {
    later =
        m::gae_carry_fold_token(later, static_cast<bool>(valid[static_cast<size_t>(t)]), 0.5, 0.5,
                                0.25, r[static_cast<size_t>(t)], v[static_cast<size_t>(t)]);
  }
  m::gae_carry_map<double> earlier{};
  for (int t = 1; t >= 0; --t) {
    earlier = m::gae_carry_fold_token(earlier, true, 0.5, 0.5, 0.25, r[static_cast<size_t>(t)],
                                      v[static_cast<size_t>(t)]);
  }
  const auto whole = m::gae_carry_then(later, earlier);
  CHECK(whole.offset == map.offset);
  CHECK(whole.multiplier == map.multiplier);
}

TEST_CASE("GAE one-number carry: property against the textbook recurrence on random rows") {
  // A linear congruential generator: the same rows on every platform.
  unsigned state = 12345u;
  const auto uniform = [&state] {
    state = state * 1664525u + 1013904223u;
    return static_cast<double>(state >> 8) / static_cast<double>(1u << 24);
  };
  for (const double gamma : {1.0, 0.99, 0.5, 0.0}) {
    for (const double lambda : {1.0, 0.95, 0.3, 0.0}) {
      const double gl = gamma * lambda;
      const int n = 37;
      std::vector<double> r(n);
      std::vector<double> v(n);
      std::vector<bool> valid(n);
      for (int t = 0; t < n; ++t) {
        r[static_cast<size_t>(t)] = 4 * uniform() - 2;
        v[static_cast<size_t>(t)] = 6 * uniform() - 3;
        valid[static_cast<size_t>(t)] = uniform() < 0.7;
      }
      // Token by token from the end: the textbook pair (V_next, A_next), written out here
      // (delta_t = r_t + gamma V_next - V_t, A_t = delta_t + gamma lambda A_next), and the
      // one-number carry.
      double next_value = 0;
      double next_advantage = 0;
      m::gae_carry_map<double> carry{};
      double max_error = 0;
      int count = 0;
      for (int t = n - 1; t >= 0; --t) {
        const auto k = static_cast<size_t>(t);
        const double a_carry = m::gae_advantage_from_carry(gamma, r[k], v[k], carry.offset);
        const double a_pair = r[k] + gamma * next_value - v[k] + gl * next_advantage;
        if (valid[k]) {
          max_error = std::max(max_error, std::abs(a_carry - a_pair) / (1 + std::abs(a_pair)));
          next_value = v[k];
          next_advantage = a_pair;
          ++count;
        }
        carry = m::gae_carry_fold_token(carry, static_cast<bool>(valid[k]), gamma, lambda, gl, r[k],
                                        v[k]);
      }
      CHECK(max_error < 1e-13);
      CHECK(carry.offset == doctest::Approx(next_value + lambda * next_advantage).epsilon(1e-12));
      CHECK(carry.multiplier == doctest::Approx(std::pow(gl, count)).epsilon(1e-12));
      // Any split: the composite of the two halves' maps is the whole row's map.
      for (const int split : {1, 10, 20, 36}) {
        m::gae_carry_map<double> later{};
        m::gae_carry_map<double> earlier{};
        for (int t = n - 1; t >= 0; --t) {
          const auto k = static_cast<size_t>(t);
          auto& part = t >= split ? later : earlier;
          part = m::gae_carry_fold_token(part, static_cast<bool>(valid[k]), gamma, lambda, gl, r[k],
                                         v[k]);
        }
        const auto whole = m::gae_carry_then(later, earlier);
        CHECK(whole.offset == doctest::Approx(carry.offset).epsilon(1e-12));
        CHECK(whole.multiplier == doctest::Approx(carry.multiplier).epsilon(1e-12));
      }
    }
  }
}

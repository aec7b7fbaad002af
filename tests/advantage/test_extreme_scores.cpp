// Group statistics at the edges of the double and float ranges (issue #6): scores of +-1e300 and
// +-1.7e308 (whose squares overflow), 1e-300 (whose squares underflow), mixed 1e-300 and 1e300,
// near-equal huge scores (a few ulps apart), float scores of 3e38. Every expected value is derived
// by hand in the comments; none comes from the implementation.
#include <rlcore/advantage/all.hpp>
#include <rlcore/advantage/reward.hpp>
#include <rlcore/math/stats.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

using rlcore::index_t;
namespace m = rlcore::math;

namespace {

constexpr double dmax = std::numeric_limits<double>::max();
constexpr float float_max = std::numeric_limits<float>::max();
const double inv_sqrt2 = 1.0 / std::sqrt(2.0);

template <class T>
bool all_finite(const std::vector<T>& x) {
  for (T v : x) {
    if (!std::isfinite(v)) {
      return false;
    }
  }
  return true;
}

template <class T>
double sum_of(const std::vector<T>& x) {
  double s = 0;
  for (T v : x) {
    s += static_cast<double>(v);
  }
  return s;
}

rlcore::grpo_advantage_options with_scaling(rlcore::grpo_scaling scaling,
                                            rlcore::std_kind kind = rlcore::std_kind::unbiased) {
  rlcore::grpo_advantage_options o;
  o.scaling = scaling;
  o.std_kind = kind;
  return o;
}

struct at {
  const std::vector<double>* x;
  double operator()(index_t k) const { return (*x)[static_cast<size_t>(k)]; }
};

} // namespace

TEST_CASE("units: a power of two per magnitude band, combined sums rescale exactly") {
  CHECK(m::unit_level_of(0.0) == m::small_unit_level);
  CHECK(m::unit_level_of(1e-300) == m::small_unit_level);
  CHECK(m::unit_level_of(0x1p-440) == m::normal_unit_level);
  CHECK(m::unit_level_of(-1.0) == m::normal_unit_level);
  CHECK(m::unit_level_of(0x1p440) == m::normal_unit_level);
  CHECK(m::unit_level_of(-1e300) == m::large_unit_level);
  CHECK(m::unit_level_of(std::nan("")) == m::normal_unit_level); // NaN propagates through sums
  CHECK(m::unit_of(m::large_unit_level) * m::inverse_unit_of(m::large_unit_level) == 1.0);
  // {3, 1e300}: 3 is accumulated in unit 1, 1e300 in 2^600; the sum moves 3 to 2^600 exactly.
  m::moment_sums s = m::first_pass_term(3.0);
  s += m::first_pass_term(1e300);
  CHECK(s.level == m::large_unit_level);
  CHECK(s.count == 2);
  CHECK(s.sum == 1e300 * 0x1p-600 + 3.0 * 0x1p-600);
  // The other order gives the same sums.
  m::moment_sums t = m::first_pass_term(1e300);
  t += m::first_pass_term(3.0);
  CHECK(t.sum == s.sum);
  CHECK(t.level == s.level);
}

TEST_CASE("moments of +-1e300, 1.7e308 and 1e-300 values: finite and exact to rounding") {
  // {1e300, -1e300}: mean 0, deviations +-1e300; population std 1e300, unbiased sqrt(2) e300.
  const std::vector<double> big{1e300, -1e300};
  const auto pop = m::range_moments(0, 2, at{&big}, rlcore::std_kind::population);
  CHECK(pop.mean == 0.0);
  CHECK(pop.stddev == doctest::Approx(1e300).epsilon(1e-15));
  const auto unb = m::range_moments(0, 2, at{&big}, rlcore::std_kind::unbiased);
  CHECK(unb.stddev == doctest::Approx(std::sqrt(2.0) * 1e300).epsilon(1e-15));
  // {1.7e308, -1.7e308}: the unbiased std sqrt(2) 1.7e308 exceeds the largest double: the plain
  // value saturates, the value in units stays exact.
  const std::vector<double> edge{1.7e308, -1.7e308};
  const auto e = m::range_moments(0, 2, at{&edge}, rlcore::std_kind::unbiased);
  CHECK(e.stddev == dmax);
  CHECK(e.units.stddev / std::sqrt(2.0) * e.units.unit == doctest::Approx(1.7e308));
  // {1e-300, 2e-300, 3e-300}: mean 2e-300, unbiased std 1e-300 (the plain squares, 1e-600, would
  // underflow to 0).
  const std::vector<double> tiny{1e-300, 2e-300, 3e-300};
  const auto t = m::range_moments(0, 3, at{&tiny}, rlcore::std_kind::unbiased);
  CHECK(t.mean == doctest::Approx(2e-300).epsilon(1e-15));
  CHECK(t.stddev == doctest::Approx(1e-300).epsilon(1e-15));
  // Mixed {1e-300, 1e300}: mean 5e299, population std 5e299.
  const std::vector<double> mixed{1e-300, 1e300};
  const auto x = m::range_moments(0, 2, at{&mixed}, rlcore::std_kind::population);
  CHECK(x.mean == doctest::Approx(5e299).epsilon(1e-15));
  CHECK(x.stddev == doctest::Approx(5e299).epsilon(1e-15));
  // Weighted mean of {1e300 (w 1), -1e300 (w 3)}: -2e300 / 4 = -5e299.
  const std::vector<double> w{1, 3};
  CHECK(m::weighted_range_mean(0, 2, at{&big}, at{&w}) == doctest::Approx(-5e299).epsilon(1e-15));
}

TEST_CASE("GRPO with scores of +-1e300 and +-1.7e308: the standardised values of any scale") {
  for (double c : {1e300, 1.7e308, 1e200, 1e155}) {
    CAPTURE(c);
    // {c, -c}: mean 0, deviations +-c; unbiased std sqrt(2) c -> a = +-1/sqrt(2); population
    // std c -> +-1 (eps = 1e-6 is negligible).
    const std::vector<double> s{c, -c};
    std::vector<double> a(2);
    const auto stats = rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{2}, a);
    CHECK(a[0] == doctest::Approx(inv_sqrt2).epsilon(1e-14));
    CHECK(a[1] == doctest::Approx(-inv_sqrt2).epsilon(1e-14));
    CHECK(a[0] + a[1] == 0.0);
    CHECK(stats.advantage_mean == 0.0);
    CHECK(stats.advantage_std == doctest::Approx(inv_sqrt2).epsilon(1e-14));
    rlcore::grpo_outcome_sequence_advantages(
        s, rlcore::uniform_groups{2}, a,
        with_scaling(rlcore::grpo_scaling::group, rlcore::std_kind::population));
    CHECK(a[0] == doctest::Approx(1.0).epsilon(1e-14));
    CHECK(a[1] == doctest::Approx(-1.0).epsilon(1e-14));
    // Batch scaling over one group: the same values.
    rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{2}, a,
                                             with_scaling(rlcore::grpo_scaling::batch));
    CHECK(a[0] == doctest::Approx(inv_sqrt2).epsilon(1e-14));
    // Dr. GRPO: s - mean = +-c exactly.
    rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{2}, a,
                                             with_scaling(rlcore::grpo_scaling::none));
    CHECK(a[0] == c);
    CHECK(a[1] == -c);
  }
  // Token form, padded with a masked slot holding garbage: the same +-1/sqrt(2), 0 at the mask.
  const std::vector<double> s{1e300, -1e300};
  const std::vector<unsigned char> mask{1, 0, 1, 1};
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 2));
  std::vector<float> tokens(4, 9.0f);
  rlcore::grpo_outcome_advantages(layout, s, rlcore::uniform_groups{2},
                                  rlcore::make_matrix_view(tokens.data(), 2, 2));
  CHECK(tokens[0] == doctest::Approx(inv_sqrt2).epsilon(1e-6));
  CHECK(tokens[1] == 0.0f);
  CHECK(tokens[2] == doctest::Approx(-inv_sqrt2).epsilon(1e-6));
  CHECK(tokens[3] == doctest::Approx(-inv_sqrt2).epsilon(1e-6));
}

TEST_CASE("GRPO, three scores near the double maximum: values, saturation of Dr. GRPO") {
  // {c, -c, c}, c = 1.7e308: mean c/3, deviations {2/3, -4/3, 2/3} c, squares sum 24/9 c^2,
  // unbiased var 4/3 c^2, std 2 c / sqrt(3): a = {1/sqrt(3), -2/sqrt(3), 1/sqrt(3)}.
  const double c = 1.7e308;
  const std::vector<double> s{c, -c, c};
  std::vector<double> a(3);
  rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{3}, a);
  const double r3 = std::sqrt(3.0);
  CHECK(a[0] == doctest::Approx(1 / r3).epsilon(1e-14));
  CHECK(a[1] == doctest::Approx(-2 / r3).epsilon(1e-14));
  CHECK(a[2] == doctest::Approx(1 / r3).epsilon(1e-14));
  CHECK(std::abs(sum_of(a)) < 1e-15);
  // Dr. GRPO: 2/3 c = 1.133e308 is a double; -4/3 c = -2.27e308 is not: it saturates at -max.
  rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{3}, a,
                                           with_scaling(rlcore::grpo_scaling::none));
  CHECK(a[0] == doctest::Approx(c / 3 * 2).epsilon(1e-15));
  CHECK(a[1] == -dmax);
  CHECK(a[2] == a[0]);
  // Identical scores at the maximum: exactly 0.
  const std::vector<double> same(4, dmax);
  std::vector<double> z(4, 9.0);
  const auto stats = rlcore::grpo_outcome_sequence_advantages(same, rlcore::uniform_groups{4}, z);
  for (double v : z) {
    CHECK(v == 0.0);
  }
  CHECK(stats.zero_spread_fraction == 1.0);
}

TEST_CASE("GRPO with mixed 1e-300 and 1e300 scores, and with tiny scores") {
  // {1e-300, 1e300}: the 1e-300 is negligible: mean 5e299, deviations -+5e299, unbiased std
  // sqrt(2) 5e299: a = -+1/sqrt(2).
  const std::vector<double> s{1e-300, 1e300};
  std::vector<double> a(2);
  rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{2}, a);
  CHECK(a[0] == doctest::Approx(-inv_sqrt2).epsilon(1e-14));
  CHECK(a[1] == doctest::Approx(inv_sqrt2).epsilon(1e-14));
  // {1e-300, 2e-300, 3e-300} with eps = 1e-320: mean 2e-300, unbiased std 1e-300: a = {-1, 0, 1}
  // to 1e-20 (a plain variance underflows to 0 and would give +-1e-300 / 1e-320 = +-1e20).
  const std::vector<double> tiny{1e-300, 2e-300, 3e-300};
  std::vector<double> b(3);
  rlcore::grpo_advantage_options o;
  o.eps = 1e-320;
  rlcore::grpo_outcome_sequence_advantages(tiny, rlcore::uniform_groups{3}, b, o);
  CHECK(b[0] == doctest::Approx(-1.0).epsilon(1e-14));
  CHECK(std::abs(b[1]) < 1e-15);
  CHECK(b[2] == doctest::Approx(1.0).epsilon(1e-14));
  // With the default eps = 1e-6 the tiny spread is swamped: a = dev / 1e-6 = {-1e-294, 0, 1e-294}.
  rlcore::grpo_outcome_sequence_advantages(tiny, rlcore::uniform_groups{3}, b);
  CHECK(b[0] == doctest::Approx(-1e-294).epsilon(1e-12));
  CHECK(b[2] == doctest::Approx(1e-294).epsilon(1e-12));
  // Batch scaling with one huge and one ordinary group: {1e300, -1e300 | 1, 2}. Batch mean
  // 0.75, deviations ~ +-1e300 (the ordinary ones are negligible): unbiased batch variance
  // 2e600 / 3, std sqrt(2/3) e300. Group means 0 and 1.5: a = {1e300, -1e300, -0.5, 0.5} / std.
  const std::vector<double> two{1e300, -1e300, 1.0, 2.0};
  std::vector<double> c(4);
  rlcore::grpo_outcome_sequence_advantages(two, rlcore::uniform_groups{2}, c,
                                           with_scaling(rlcore::grpo_scaling::batch));
  const double batch_std = std::sqrt(2.0 / 3.0) * 1e300;
  CHECK(c[0] == doctest::Approx(1e300 / batch_std).epsilon(1e-14));
  CHECK(c[1] == doctest::Approx(-1e300 / batch_std).epsilon(1e-14));
  CHECK(c[2] == doctest::Approx(-0.5 / batch_std).epsilon(1e-14));
  CHECK(c[3] == doctest::Approx(0.5 / batch_std).epsilon(1e-14));
}

TEST_CASE("near-equal huge scores: an accurate mean, advantages that sum to 0") {
  // Two scores 9 ulps apart (the fuzz finding; ulp = 2^41): the mean lies half-way, which no
  // double represents; centred against hi + lo the deviations are exactly -+4.5 ulp: population
  // std 4.5 ulp and a = {-1, 1} (eps = 1e-6 against 1e13 is negligible). A rounded mean alone
  // gives {-1.111, 0.889}.
  {
    const std::vector<double> s{-1.3476555094338099e28, -1.3476555094338079e28};
    std::vector<double> a(2);
    rlcore::grpo_outcome_sequence_advantages(
        s, rlcore::uniform_groups{2}, a,
        with_scaling(rlcore::grpo_scaling::group, rlcore::std_kind::population));
    CHECK(a[0] == doctest::Approx(-1.0).epsilon(1e-15));
    CHECK(a[1] == doctest::Approx(1.0).epsilon(1e-15));
    CHECK(std::abs(a[0] + a[1]) < 1e-15);
  }
  // 1e30 and 1e30 (1 + 1e-15), and a group of five scores within 3 ulps of 1e30: centred
  // values exact, so the standardised values sum to 0 to rounding (|sum| <= 1e-14), under every
  // scaling; the RLOO values too.
  const double c = 1e30;
  const double u = std::nextafter(c, 2 * c) - c; // one ulp of 1e30: 2^47
  const std::vector<std::vector<double>> groups{
      {c, c * (1 + 1e-15)}, {c, c + u, c + 3 * u, c + u, c + 2 * u}, {-c, -c - u, -c - u}};
  for (const auto& s : groups) {
    CAPTURE(s.size());
    const auto n = static_cast<index_t>(s.size());
    std::vector<double> a(s.size());
    for (auto kind : {rlcore::std_kind::unbiased, rlcore::std_kind::population}) {
      rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{n}, a,
                                               with_scaling(rlcore::grpo_scaling::group, kind));
      CHECK(std::abs(sum_of(a)) < 1e-14);
      CHECK(std::abs(a[0]) > 0.1); // a real spread, standardised to O(1)
    }
    rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{n}, a,
                                             with_scaling(rlcore::grpo_scaling::none));
    // Dr. GRPO: the deviations are multiples of u / n, exact: their sum is 0 within u * 1e-14.
    CHECK(std::abs(sum_of(a)) <= u * 1e-14);
    auto layout = rlcore::padded_unmasked(n, 1);
    rlcore::rloo_advantages(layout, s, rlcore::uniform_groups{n},
                            rlcore::make_matrix_view(a.data(), n, 1));
    CHECK(std::abs(sum_of(a)) <= u * 1e-14);
  }
  // The two-score case by hand: d = c (1 + 1e-15) - c is exact (Sterbenz), a = {-1, 1} (pop.).
  std::vector<double> a(2);
  rlcore::grpo_outcome_sequence_advantages(
      groups[0], rlcore::uniform_groups{2}, a,
      with_scaling(rlcore::grpo_scaling::group, rlcore::std_kind::population));
  CHECK(a[0] == doctest::Approx(-1.0).epsilon(1e-15));
  CHECK(a[1] == doctest::Approx(1.0).epsilon(1e-15));
}

TEST_CASE("float scores of 3e38: finite advantages, Dr. GRPO and RLOO saturate at the float max") {
  const std::vector<float> s{3e38f, -3e38f, 3e38f};
  // The moments run in double: mean 1e38, deviations {2, -4, 2} e38, unbiased std 2 sqrt(3) e38:
  // a = {1/sqrt(3), -2/sqrt(3), 1/sqrt(3)}.
  std::vector<float> a(3);
  rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{3}, a);
  const double r3 = std::sqrt(3.0);
  CHECK(a[0] == doctest::Approx(1 / r3).epsilon(1e-6));
  CHECK(a[1] == doctest::Approx(-2 / r3).epsilon(1e-6));
  CHECK(std::abs(sum_of(a)) < 1e-6);
  // Dr. GRPO: {2, -4, 2} e38; -4e38 is beyond the float range: -FLT_MAX, not -inf.
  rlcore::grpo_outcome_sequence_advantages(s, rlcore::uniform_groups{3}, a,
                                           with_scaling(rlcore::grpo_scaling::none));
  CHECK(a[0] == doctest::Approx(2e38).epsilon(1e-6));
  CHECK(a[1] == -float_max);
  // RLOO on {3e38, -3e38}: 2 (s - mean) = +-6e38 -> +-FLT_MAX at every valid token.
  const std::vector<float> pair{3e38f, -3e38f};
  auto layout = rlcore::padded_unmasked(2, 3);
  std::vector<float> tokens(6);
  auto tv = rlcore::make_matrix_view(tokens.data(), 2, 3);
  rlcore::rloo_advantages(layout, pair, rlcore::uniform_groups{2}, tv);
  CHECK(tokens[0] == float_max);
  CHECK(tokens[5] == -float_max);
  // GRPO token form in float: +-1/sqrt(2), finite.
  rlcore::grpo_outcome_advantages(layout, pair, rlcore::uniform_groups{2}, tv);
  CHECK(all_finite(tokens));
  CHECK(tokens[0] == doctest::Approx(inv_sqrt2).epsilon(1e-6));
  // Near-equal float scores: 3e38 and the next float up, in a group of two: a = -+1/sqrt(2).
  const std::vector<float> close{3e38f, std::nextafter(3e38f, float_max)};
  rlcore::grpo_outcome_sequence_advantages(close, rlcore::uniform_groups{2}, a = {0, 0});
  CHECK(a[0] == doctest::Approx(-inv_sqrt2).epsilon(1e-6));
  CHECK(a[0] + a[1] == 0.0f);
}

TEST_CASE("OPO, pass@k, whitening, GRPO process and GDPO with scores beyond 1e154") {
  auto layout = rlcore::padded_unmasked(2, 2);
  std::vector<double> tokens(4);
  auto tv = rlcore::make_matrix_view(tokens.data(), 2, 2);
  const std::vector<double> s{1e300, -1e300};
  // OPO (equal lengths): baseline 0, a = s.
  rlcore::opo_advantages(layout, s, rlcore::uniform_groups{2}, tv);
  CHECK(tokens == std::vector<double>{1e300, 1e300, -1e300, -1e300});
  // pass@k: the best gets (s_max - s_second) / (std + eps) = 2e300 / (sqrt(2) e300) = sqrt(2);
  // raw: 2e300. At the double maximum the raw difference 3.4e308 saturates.
  rlcore::pass_at_k_advantages(layout, s, rlcore::uniform_groups{2}, tv);
  CHECK(tokens[0] == doctest::Approx(std::sqrt(2.0)).epsilon(1e-14));
  CHECK(tokens[2] == 0.0);
  rlcore::pass_at_k_options raw;
  raw.divide_by_std = false;
  rlcore::pass_at_k_advantages(layout, s, rlcore::uniform_groups{2}, tv, raw);
  CHECK(tokens[1] == doctest::Approx(2e300).epsilon(1e-15));
  const std::vector<double> edge{1.7e308, -1.7e308};
  rlcore::pass_at_k_advantages(layout, edge, rlcore::uniform_groups{2}, tv, raw);
  CHECK(tokens[0] == dmax);
  rlcore::pass_at_k_advantages(layout, edge, rlcore::uniform_groups{2}, tv);
  CHECK(tokens[0] == doctest::Approx(std::sqrt(2.0)).epsilon(1e-14));

  // Whitening {1e300, -1e300, 1e300, -1e300}: mean 0, unbiased var 4e600 / 3: x / std =
  // +-sqrt(3)/2.
  std::vector<double> x{1e300, -1e300, 1e300, -1e300};
  rlcore::whiten(layout, tv = rlcore::make_matrix_view(x.data(), 2, 2));
  CHECK(x[0] == doctest::Approx(std::sqrt(3.0) / 2).epsilon(1e-14));
  CHECK(x[1] == doctest::Approx(-std::sqrt(3.0) / 2).epsilon(1e-14));
  CHECK(std::abs(sum_of(x)) < 1e-14);
  // mean_only on {c, -c, c, c}, c = 1.7e308: mean c/2; c/2 and -3c/2 (saturated to -max).
  std::vector<double> y{1.7e308, -1.7e308, 1.7e308, 1.7e308};
  rlcore::whiten(layout, rlcore::make_matrix_view(y.data(), 2, 2),
                 {rlcore::whiten_kind::mean_only, 1e-8});
  CHECK(y[0] == doctest::Approx(0.85e308).epsilon(1e-15));
  CHECK(y[1] == -dmax);
  // Tiny tokens {1e-300, -1e-300, ...}: var 4e-600 / 3 is far below eps = 1e-8: x / 1e-4.
  std::vector<double> t{1e-300, -1e-300, 1e-300, -1e-300};
  rlcore::whiten(layout, rlcore::make_matrix_view(t.data(), 2, 2));
  CHECK(t[0] == doctest::Approx(1e-296).epsilon(1e-12));

  // GRPO process: one step per row at the last token, rewards {1e300, -1e300} in one group:
  // normalised +-1/sqrt(2), summed into every earlier token of the row.
  const std::vector<double> rewards{0, 1e300, 0, -1e300};
  const std::vector<double> ends{0, 1, 0, 1};
  rlcore::grpo_process_advantages(layout, rlcore::make_matrix_view(rewards.data(), 2, 2),
                                  rlcore::make_matrix_view(ends.data(), 2, 2),
                                  rlcore::uniform_groups{2},
                                  tv = rlcore::make_matrix_view(tokens.data(), 2, 2));
  CHECK(tokens[0] == doctest::Approx(inv_sqrt2).epsilon(1e-14));
  CHECK(tokens[1] == doctest::Approx(inv_sqrt2).epsilon(1e-14));
  CHECK(tokens[3] == doctest::Approx(-inv_sqrt2).epsilon(1e-14));

  // GDPO, one column {1e300, -1e300}, one group: the group stage gives A = +-1/sqrt(2) (eps is
  // negligible at 1e300); the batch stage standardises {+-1/sqrt(2)}: mean 0, unbiased std 1,
  // so rewards_out = +-(1/sqrt(2)) / (1 + 1e-6).
  const std::vector<double> weights{1.0};
  std::vector<double> out(2);
  rlcore::normalized_reward_sum(rlcore::make_matrix_view(s.data(), 2, 1), weights,
                                rlcore::uniform_groups{2}, out);
  CHECK(out[0] == doctest::Approx(inv_sqrt2 / (1 + 1e-6)).epsilon(1e-14));
  CHECK(out[1] == doctest::Approx(-inv_sqrt2 / (1 + 1e-6)).epsilon(1e-14));
  rlcore::normalized_reward_sum_options no_batch;
  no_batch.normalize_batch = false;
  rlcore::normalized_reward_sum(rlcore::make_matrix_view(s.data(), 2, 1), weights,
                                rlcore::uniform_groups{2}, out, no_batch);
  CHECK(out[0] == doctest::Approx(inv_sqrt2).epsilon(1e-14));
}

TEST_CASE("zero spread at any scale: exactly 0, even when eps vanishes in the moments' unit") {
  // eps / 2^600 underflows to 0 for eps = 1e-300: identical scores must still give 0 / (0 + eps)
  // = 0, not 0 / 0 (fuzz finding).
  const std::vector<double> same(3, 1e300);
  std::vector<double> a(3, 9.0);
  rlcore::grpo_advantage_options o;
  o.eps = 1e-300;
  rlcore::grpo_outcome_sequence_advantages(same, rlcore::uniform_groups{3}, a, o);
  CHECK(a == std::vector<double>{0.0, 0.0, 0.0});
  o.scaling = rlcore::grpo_scaling::batch;
  rlcore::grpo_outcome_sequence_advantages(same, rlcore::uniform_groups{3}, a, o);
  CHECK(a == std::vector<double>{0.0, 0.0, 0.0});
  // Whitening identical 1.7e308 values: eps / u^2 = 1e-8 * 2^-1200 underflows; result 0.
  auto layout = rlcore::padded_unmasked(2, 2);
  std::vector<double> x(4, 1.7e308);
  rlcore::whiten(layout, rlcore::make_matrix_view(x.data(), 2, 2));
  CHECK(x == std::vector<double>{0.0, 0.0, 0.0, 0.0});
  // pass@k on {y, y, y + u} (u one ulp at 1.3e30), unbiased std u / sqrt(3), eps = 1: the best
  // gets u / (u / sqrt(3) + 1) = sqrt(3) (1 - 1.2e-14) (fuzz finding: an oracle that averaged the
  // scores themselves in long double was off by 2^-11 of u).
  const double y = -0x1.93e5939a08ce7p+99;
  const std::vector<double> s{y, y, std::nextafter(y, 0.0)};
  const double u = s[2] - s[0];
  rlcore::pass_at_k_options po;
  po.eps = 1.0;
  std::vector<double> tokens(3);
  rlcore::pass_at_k_advantages(rlcore::padded_unmasked(3, 1), s, rlcore::uniform_groups{3},
                               rlcore::make_matrix_view(tokens.data(), 3, 1), po);
  CHECK(tokens[2] == doctest::Approx(u / (u / std::sqrt(3.0) + 1)).epsilon(1e-14));
  CHECK(tokens[0] == 0.0);
}

TEST_CASE("pass@k: a tiny s_max - s_second in a group with a huge score keeps its precision") {
  // Scores {-2^478, 3 2^-495, 2^-495, -3}: the best is 3 2^-495, the second 2^-495, so
  // s_max - s_second = 2^-494 exactly; the group std (unbiased) is 2^478 / 2 to 1e-30 (one
  // deviation of 3/4 2^478, three of 1/4 2^478: squares 12/16 2^956 over 3 = 2^956 / 4).
  // a = 2^-494 / (2^477 + 1e-8) = 2^-971 (a plain double): in the group's unit (2^600) both
  // scores would underflow to 0 and give 0 (fuzz finding).
  const double huge = 0x1p478;
  const std::vector<double> s{-huge, 0x1.8p-494, 0x1p-495, -3.0};
  std::vector<double> tokens(4);
  rlcore::pass_at_k_options po;
  po.eps = 1e-8;
  rlcore::pass_at_k_advantages(rlcore::padded_unmasked(4, 1), s, rlcore::uniform_groups{4},
                               rlcore::make_matrix_view(tokens.data(), 4, 1), po);
  CHECK(tokens[1] == doctest::Approx(0x1p-971).epsilon(1e-14));
  CHECK(tokens[0] == 0.0);
  CHECK(tokens[2] == 0.0);
}

// Moments of a set of values, computed the stable way: always in double (whatever the input
// precision), in two passes, never as E[x^2] - E[x]^2, in units that keep every finite input
// finite.
//
//   pass 1   n, sum x / u                    -> first mean m1 = sum (x / u) / n
//   pass 2   sum d, sum d^2, d = x / u - m1   -> mean / u = m1 + sum d / n   (corrected mean)
//                                               var / u^2 = (sum d^2 - (sum d)^2 / n) / (n - 1 or
//                                               n)
//
// Units. u is a power of two picked from the largest |x| (a running maximum in pass 1, as in a
// stable norm): u = 1 while max |x| lies in [2^-440, 2^440] (about 3.5e-133 .. 2.8e132), the
// normal range, where the sums are those of the plain formulas; u = 2^600 above it and 2^-600
// below it. Scaling by a power of two is exact, so results in units are the plain results divided
// by u bit for bit (short of denormals), while sum (x / u)^2 can no longer overflow (scores of
// 1e300 or 1.7e308) nor underflow (scores of 1e-300). Each term is accumulated in the unit of its
// own value; adding two sums rescales the one in the smaller unit (exact). Callers form their
// results in units (moments_in_units) and multiply back by u only where a result can be large
// (an unscaled advantage s - mean), saturating at the largest finite value (finite_cast).
//
// Accurate mean. The mean is kept as an unevaluated sum hi + lo (hi = the rounded mean, lo its
// rounding error; TwoSum of m1 and the correction), and a value is centred as (x - hi) - lo. For
// scores a few ulps apart (1e30 and 1e30 (1 + 1e-15)) x - hi is exact and the centred values are
// exact to rounding, so they sum to 0; a rounded mean alone would be off by up to half an ulp,
// which can be the whole spread.
//
// The corrected mean is exact for identical values: m1 is within a few ulps of c, d = c - m1 is
// then exact (Sterbenz), sum d / n = d exactly, so hi = m1 + (c - m1) = c, lo = 0 and every
// centred value is exactly 0. Weighted moments use the same passes with n := sum of weights.
#pragma once

#include "../config.hpp"
#include "finite.hpp"
#include "functions.hpp"

#include <type_traits>

namespace rlcore {

/// How a standard deviation divides the sum of squared deviations: by n - 1 (unbiased, the
/// torch.std default) or by n (population).
enum class std_kind { unbiased, population };

} // namespace rlcore

namespace rlcore::math {

/// Unit levels of the moment sums: a value is accumulated as x / unit_of(level).
inline constexpr int small_unit_level = -1; ///< max |x| < 2^-440 (and 0): unit 2^-600
inline constexpr int normal_unit_level = 0; ///< 2^-440 <= max |x| <= 2^440: unit 1
inline constexpr int large_unit_level = 1;  ///< max |x| > 2^440 (and inf): unit 2^600

/// Level of the unit a value needs (NaN: normal, so that it propagates through the sums).
RLCORE_HD constexpr int unit_level_of(double x) {
  const double magnitude = x < 0 ? -x : x;
  if (magnitude > 0x1p440) {
    return large_unit_level;
  }
  if (magnitude < 0x1p-440) {
    return small_unit_level;
  }
  return normal_unit_level;
}

/// The unit u of a level: 2^(600 level).
RLCORE_HD constexpr double unit_of(int level) {
  return level > 0 ? 0x1p600 : (level < 0 ? 0x1p-600 : 1.0);
}

/// 1 / u of a level (exact: a power of two).
RLCORE_HD constexpr double inverse_unit_of(int level) {
  return level > 0 ? 0x1p-600 : (level < 0 ? 0x1p600 : 1.0);
}

/// x * 2^(-600 steps) for steps in {0, 1, 2}: moves a sum to a unit `steps` levels larger
/// (exact unless the result is denormal; 2 steps of 2^-600 because 2^-1200 is not a double).
RLCORE_HD constexpr double to_larger_unit(double x, int steps) {
  for (int k = 0; k < steps; ++k) {
    x *= 0x1p-600;
  }
  return x;
}

/// Running sums of one pass: count (or sum of weights), sum of values and sum of squares, both in
/// the unit of `level`. Used as the accumulator of the execution context's reductions
/// (operator+= and operator+); adding sums of different levels rescales the smaller unit's sums.
/// Pass-2 terms all carry pass 1's level, so their sum of squares is never rescaled.
struct moment_sums {
  double count = 0;
  double sum = 0;    ///< sum of x / unit (pass 1) or of d (pass 2)
  double sum_sq = 0; ///< sum of d^2 (pass 2), in unit^2
  int level = small_unit_level;

  RLCORE_HD constexpr moment_sums& operator+=(const moment_sums& other) {
    if (other.level == level) {
      count += other.count;
      sum += other.sum;
      sum_sq += other.sum_sq;
      return *this;
    }
    return add_in_other_unit(other);
  }
  /// operator+= for sums of different levels: the one in the smaller unit is moved to the larger.
  RLCORE_HD constexpr moment_sums& add_in_other_unit(const moment_sums& other) {
    double other_sum = other.sum;
    double other_sum_sq = other.sum_sq;
    if (other.level > level) {
      const int steps = other.level - level;
      sum = to_larger_unit(sum, steps);
      sum_sq = to_larger_unit(to_larger_unit(sum_sq, steps), steps);
      level = other.level;
    } else {
      const int steps = level - other.level;
      other_sum = to_larger_unit(other_sum, steps);
      other_sum_sq = to_larger_unit(to_larger_unit(other_sum_sq, steps), steps);
    }
    count += other.count;
    sum += other_sum;
    sum_sq += other_sum_sq;
    return *this;
  }
  RLCORE_HD friend constexpr moment_sums operator+(moment_sums a, const moment_sums& b) {
    a += b;
    return a;
  }
};

/// Mean of pass 1 (count, sum), in pass 1's unit; 0 when count is 0.
RLCORE_HD inline double first_mean(const moment_sums& pass1) {
  return pass1.count > 0 ? pass1.sum / pass1.count : 0.0;
}

/// Pass-1 contribution of value x with weight w (w = 1 for plain moments), in x's own unit:
/// {w, w x / u, 0}.
RLCORE_HD inline moment_sums first_pass_term(double x, double w = 1.0) {
  const int level = unit_level_of(x);
  return {w, w * (x * inverse_unit_of(level)), 0.0, level};
}

/// Pass-2 contribution of value x against the first mean m1 (in the unit of pass 1's `level`,
/// d = x / u - m1): {w, w d, w d^2}.
RLCORE_HD inline moment_sums second_pass_term(double x, double first_mean_value, int level,
                                              double w = 1.0) {
  const double d = x * inverse_unit_of(level) - first_mean_value;
  return {w, w * d, w * d * d, level};
}

/// A mean as an unevaluated sum hi + lo (hi the rounded mean, lo its rounding error), in units.
struct split_mean {
  double hi = 0;
  double lo = 0;
};

/// TwoSum (Knuth): a + b = hi + lo exactly, hi = fl(a + b), for any finite a, b.
RLCORE_HD inline split_mean two_sum(double a, double b) {
  const double hi = a + b;
  const double b_part = hi - a;
  const double a_part = hi - b_part;
  return {hi, (a - a_part) + (b - b_part)};
}

/// Corrected mean m1 + sum d / n from the pass-2 sums as hi + lo (in units); m1 when n is 0.
RLCORE_HD inline split_mean corrected_split_mean(double first_mean_value,
                                                 const moment_sums& pass2) {
  if (!(pass2.count > 0)) {
    return {first_mean_value, 0.0};
  }
  const split_mean m = two_sum(first_mean_value, pass2.sum / pass2.count);
  // A non-finite sum (NaN or inf input) has no rounding error to carry: keep it in hi.
  return isfinite(m.lo) ? m : split_mean{m.hi, 0.0};
}

/// Corrected mean m1 + sum d / n from the pass-2 sums, rounded (in units); m1 when n is 0.
RLCORE_HD inline double corrected_mean(double first_mean_value, const moment_sums& pass2) {
  return corrected_split_mean(first_mean_value, pass2).hi;
}

/// Variance from the pass-2 sums (in unit^2): (sum d^2 - (sum d)^2 / n) / (n - 1) (unbiased) or
/// / n (population), clamped at 0. Defined as 0 when there is no spread to measure: n < 2 for the
/// unbiased form, n == 0 for the population form (callers that must reject n < 2 check first).
RLCORE_HD inline double variance(const moment_sums& pass2, std_kind kind) {
  const double n = pass2.count;
  const double divisor = kind == std_kind::unbiased ? n - 1.0 : n;
  if (n <= 0 || divisor <= 0) {
    return 0.0;
  }
  const double centred = pass2.sum_sq - pass2.sum * pass2.sum / n;
  return centred > 0 ? centred / divisor : 0.0;
}

/// Moments in units: the mean (hi + lo) and the standard deviation divided by `unit`, a power of
/// two (1 in the normal range, see the top of this file). Every member is finite for finite
/// inputs.
struct moments_in_units {
  int level = normal_unit_level; ///< u = unit_of(level)
  double unit = 1;               ///< u
  double inverse_unit = 1;       ///< 1 / u
  split_mean mean;               ///< mean / u = mean.hi + mean.lo
  double stddev = 0;             ///< std / u

  /// (x - mean) / u, centred as (x / u - hi) - lo: accurate for x near the mean.
  [[nodiscard]] RLCORE_HD double centred(double x) const {
    return (x * inverse_unit - mean.hi) - mean.lo;
  }
  /// x / u.
  [[nodiscard]] RLCORE_HD double in_units(double x) const { return x * inverse_unit; }
  /// eps / u for an eps > 0 added to a std: at least the smallest denormal, so that a zero
  /// spread still gives 0 / (0 + eps) = 0 when eps / u underflows (eps = 1e-150, u = 2^600).
  [[nodiscard]] RLCORE_HD double eps_in_units(double eps) const {
    const double e = eps * inverse_unit;
    return e > 0 ? e : 0x1p-1074;
  }
  /// eps / u^2 for an eps > 0 added to a variance, at least the smallest denormal (as above).
  [[nodiscard]] RLCORE_HD double variance_eps_in_units(double eps) const {
    const double e = eps * inverse_unit * inverse_unit;
    return e > 0 ? e : 0x1p-1074;
  }
};

/// Moments in the unit of `level`, mean and std 0.
RLCORE_HD constexpr moments_in_units units_of_level(int level) {
  moments_in_units r;
  r.level = level;
  r.unit = unit_of(level);
  r.inverse_unit = inverse_unit_of(level);
  return r;
}

/// Mean and standard deviation of a range, plus whether every value was identical.
struct range_moments_result {
  double mean = 0;   ///< the mean (|mean| <= max |x|, finite for finite inputs)
  double stddev = 0; ///< the standard deviation, saturated at the largest double (only an
                     ///< unbiased std of values near +-1.8e308 exceeds it)
  double count = 0;
  bool constant = true;   ///< all values equal (or fewer than two values): std is then exactly 0
  moments_in_units units; ///< the same moments in units, for formulas that must not overflow
};

/// value * unit with a finite value whose product overflows saturated at +-the largest double (a
/// result formed in units, back in plain units).
RLCORE_HD inline double from_units(double value, double unit) {
  const double plain = value * unit;
  const bool overflowed = isfinite(value) && !isfinite(plain);
  return overflowed ? (plain > 0 ? finite_max<double>() : -finite_max<double>()) : plain;
}

/// The pass-1 sums moved to a unit of at least `level` (exact: a power-of-two rescaling), for a
/// caller whose formula needs u >= 1 (whitening adds eps / u^2 to the variance in units).
RLCORE_HD constexpr moment_sums with_level_at_least(moment_sums pass1, int level) {
  if (pass1.level < level) {
    pass1.sum = to_larger_unit(pass1.sum, level - pass1.level);
    pass1.level = level;
  }
  return pass1;
}

/// Result of the two passes from their sums: mean, std (kind) and the same in units.
RLCORE_HD inline range_moments_result moments_from_sums(const moment_sums& pass1,
                                                        const moment_sums& pass2, std_kind kind) {
  range_moments_result r;
  r.count = pass1.count;
  r.units = units_of_level(pass1.level);
  r.units.mean = corrected_split_mean(first_mean(pass1), pass2);
  r.units.stddev = sqrt(variance(pass2, kind));
  r.mean = from_units(r.units.mean.hi, r.units.unit);
  r.stddev = from_units(r.units.stddev, r.units.unit);
  r.constant = !(r.units.stddev > 0);
  return r;
}

/// Two-pass moments of value(k) over the k in [begin, end) where include(k) holds (value returns
/// something convertible to double; excluded entries are never read, so they may hold NaN).
/// Identical values give mean == the value and std == 0 exactly; no included entry gives
/// {0, 0, 0, true}.
template <class Value, class Include>
RLCORE_HD range_moments_result range_moments_if(index_t begin, index_t end, const Value& value,
                                                const Include& include, std_kind kind) {
  bool have_first = false;
  bool constant = true;
  double first = 0;
  moment_sums pass1;
  for (index_t k = begin; k < end; ++k) {
    if (!include(k)) {
      continue;
    }
    const double x = static_cast<double>(value(k));
    if (!have_first) {
      first = x;
      have_first = true;
    }
    constant = constant && x == first;
    pass1 += first_pass_term(x);
  }
  if (constant) {
    range_moments_result r;
    r.count = pass1.count;
    r.mean = first;
    r.units = units_of_level(pass1.level);
    r.units.mean.hi = first * r.units.inverse_unit;
    return r;
  }
  const double m1 = first_mean(pass1);
  moment_sums pass2;
  pass2.level = pass1.level;
  for (index_t k = begin; k < end; ++k) {
    if (include(k)) {
      pass2 += second_pass_term(static_cast<double>(value(k)), m1, pass1.level);
    }
  }
  range_moments_result r = moments_from_sums(pass1, pass2, kind);
  r.constant = false;
  return r;
}

/// Includes every entry.
struct include_all {
  RLCORE_HD constexpr bool operator()(index_t) const { return true; }
};

/// Two-pass moments of value(k) for every k in [begin, end) (see range_moments_if).
template <class Value>
RLCORE_HD range_moments_result range_moments(index_t begin, index_t end, const Value& value,
                                             std_kind kind) {
  return range_moments_if(begin, end, value, include_all{}, kind);
}

/// Weighted mean sum_k w_k x_k / sum_k w_k over [begin, end), two passes (corrected mean), exact
/// for identical values, in units (weights are counts or lengths: finite, >= 0). Returns
/// {unit 1, mean 0} when the weights sum to 0.
template <class Value, class Weight>
RLCORE_HD moments_in_units weighted_range_mean_in_units(index_t begin, index_t end,
                                                        const Value& value, const Weight& weight) {
  moment_sums pass1;
  for (index_t k = begin; k < end; ++k) {
    pass1 += first_pass_term(static_cast<double>(value(k)), static_cast<double>(weight(k)));
  }
  if (!(pass1.count > 0)) {
    return moments_in_units{};
  }
  const double m1 = first_mean(pass1);
  moment_sums pass2;
  pass2.level = pass1.level;
  for (index_t k = begin; k < end; ++k) {
    pass2 += second_pass_term(static_cast<double>(value(k)), m1, pass1.level,
                              static_cast<double>(weight(k)));
  }
  moments_in_units r = units_of_level(pass1.level);
  r.mean = corrected_split_mean(m1, pass2);
  return r;
}

/// Weighted mean sum_k w_k x_k / sum_k w_k over [begin, end) (see weighted_range_mean_in_units);
/// 0 when the weights sum to 0.
template <class Value, class Weight>
RLCORE_HD double weighted_range_mean(index_t begin, index_t end, const Value& value,
                                     const Weight& weight) {
  const moments_in_units m = weighted_range_mean_in_units(begin, end, value, weight);
  return from_units(m.mean.hi, m.unit);
}

} // namespace rlcore::math

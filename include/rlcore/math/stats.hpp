// Moments of a set of values, computed the stable way: always in double (whatever the input
// precision), in two passes, never as E[x^2] - E[x]^2.
//
//   pass 1   n, sum x                     -> first mean m1 = sum x / n
//   pass 2   sum d, sum d^2, d = x - m1   -> mean = m1 + sum d / n            (corrected mean)
//                                            var  = (sum d^2 - (sum d)^2 / n) / (n - 1 or n)
//
// The corrected mean is exact for identical values: m1 is within a few ulps of c, d = c - m1 is
// then exact (Sterbenz), sum d / n = d exactly, so mean = m1 + (c - m1) = c and every deviation
// x - mean is exactly 0. Weighted moments use the same passes with n := sum of weights.
// Double accumulation keeps float inputs of any finite magnitude (1e30^2 = 1e60) from overflowing.
#pragma once

#include "../config.hpp"
#include "functions.hpp"

namespace rlcore {

/// How a standard deviation divides the sum of squared deviations: by n - 1 (unbiased, the
/// torch.std default) or by n (population).
enum class std_kind { unbiased, population };

} // namespace rlcore

namespace rlcore::math {

/// Running sums of one pass: count (or sum of weights), sum of values, sum of squares.
/// Used as the accumulator of the execution context's reductions (operator+= and operator+).
struct moment_sums {
  double count = 0;
  double sum = 0;
  double sum_sq = 0;

  RLCORE_HD constexpr moment_sums& operator+=(const moment_sums& other) {
    count += other.count;
    sum += other.sum;
    sum_sq += other.sum_sq;
    return *this;
  }
  RLCORE_HD friend constexpr moment_sums operator+(moment_sums a, const moment_sums& b) {
    a += b;
    return a;
  }
};

/// Mean of pass 1 (count, sum); 0 when count is 0.
RLCORE_HD inline double first_mean(const moment_sums& pass1) {
  return pass1.count > 0 ? pass1.sum / pass1.count : 0.0;
}

/// Pass-1 contribution of value x with weight w (w = 1 for plain moments).
RLCORE_HD inline moment_sums first_pass_term(double x, double w = 1.0) {
  return {w, w * x, 0.0};
}

/// Pass-2 contribution of value x against the first mean m1 (d = x - m1): {w, w d, w d^2}.
RLCORE_HD inline moment_sums second_pass_term(double x, double first_mean_value, double w = 1.0) {
  const double d = x - first_mean_value;
  return {w, w * d, w * d * d};
}

/// Corrected mean m1 + sum d / n from the pass-2 sums; m1 when n is 0.
RLCORE_HD inline double corrected_mean(double first_mean_value, const moment_sums& pass2) {
  return pass2.count > 0 ? first_mean_value + pass2.sum / pass2.count : first_mean_value;
}

/// Variance from the pass-2 sums: (sum d^2 - (sum d)^2 / n) / (n - 1) (unbiased) or / n
/// (population), clamped at 0. Defined as 0 when there is no spread to measure: n < 2 for the
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

/// Mean and standard deviation of a range, plus whether every value was identical.
struct range_moments_result {
  double mean = 0;
  double stddev = 0;
  double count = 0;
  bool constant = true; ///< all values equal (or fewer than two values): std is then exactly 0
};

/// Two-pass moments of value(k) over the k in [begin, end) where include(k) holds (value returns
/// something convertible to double; excluded entries are never read, so they may hold NaN).
/// Identical values give mean == the value and std == 0 exactly; no included entry gives
/// {0, 0, 0, true}.
template <class Value, class Include>
RLCORE_HD range_moments_result range_moments_if(index_t begin, index_t end, const Value& value,
                                                const Include& include, std_kind kind) {
  range_moments_result r;
  bool have_first = false;
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
    r.constant = r.constant && x == first;
    pass1 += first_pass_term(x);
  }
  r.count = pass1.count;
  if (r.constant) {
    r.mean = first;
    return r;
  }
  const double m1 = first_mean(pass1);
  moment_sums pass2;
  for (index_t k = begin; k < end; ++k) {
    if (include(k)) {
      pass2 += second_pass_term(static_cast<double>(value(k)), m1);
    }
  }
  r.mean = corrected_mean(m1, pass2);
  r.stddev = sqrt(variance(pass2, kind));
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
/// for identical values. Returns 0 when the weights sum to 0.
template <class Value, class Weight>
RLCORE_HD double weighted_range_mean(index_t begin, index_t end, const Value& value,
                                     const Weight& weight) {
  moment_sums pass1;
  for (index_t k = begin; k < end; ++k) {
    pass1 += first_pass_term(static_cast<double>(value(k)), static_cast<double>(weight(k)));
  }
  if (!(pass1.count > 0)) {
    return 0.0;
  }
  const double m1 = first_mean(pass1);
  moment_sums pass2;
  for (index_t k = begin; k < end; ++k) {
    pass2 += second_pass_term(static_cast<double>(value(k)), m1, static_cast<double>(weight(k)));
  }
  return corrected_mean(m1, pass2);
}

} // namespace rlcore::math

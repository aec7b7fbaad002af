// Per-token KL estimators: value and exact gradient with respect to the current log-prob.
//
//   x = lp - ref (the log-ratio of the current to the reference policy), clamped to [-c, c]
//
//   estimator       value                     d value / d lp
//   k1              x                         1
//   abs             |x|                       sign(x)              (0 at x = 0)
//   k2              x^2 / 2                   x
//   k3              exp(-x) + x - 1           1 - exp(-x)          (DeepSeekMath eq. 4)
//   k1_plus         x                         x                    (straight-through: k2's grad)
//   k3_plus         exp(-x) + x - 1           x                    (straight-through: k2's grad)
//   k3_importance   r * k3(x), r = exp(d)     r * k3(x) + r * (1 - exp(-x)),  d = lp - old
//
// Clamp convention (matches torch.clamp under autograd): the value is computed at the clamped
// log-ratio and the gradient is the exact derivative of that clamped function, i.e. it is 0 where
// |x| > c and passes through on the boundary |x| == c. The same holds for the optional output
// clamp [lo, hi] (verl clamps k3 to [-10, 10]): where it is active the value is the bound and the
// gradient is 0.
#pragma once

#include "../config.hpp"
#include "functions.hpp"

#include <type_traits>

namespace rlcore {

/// Which per-token KL estimator a KL penalty uses (see math/kl.hpp for the formulas).
enum class kl_estimator { k1, abs, k2, k3, k1_plus, k3_plus, k3_importance };

/// Name of an estimator as spelled in the enum ("k3", "k3_plus", ...).
inline const char* to_string(kl_estimator estimator) {
  switch (estimator) {
  case kl_estimator::k1:
    return "k1";
  case kl_estimator::abs:
    return "abs";
  case kl_estimator::k2:
    return "k2";
  case kl_estimator::k3:
    return "k3";
  case kl_estimator::k1_plus:
    return "k1_plus";
  case kl_estimator::k3_plus:
    return "k3_plus";
  case kl_estimator::k3_importance:
    return "k3_importance";
  }
  return "unknown";
}

} // namespace rlcore

namespace rlcore::math {

/// A scalar value and its derivative with respect to one input.
template <real T>
struct value_and_gradient {
  T value;
  T gradient;
};

/// x clamped to [-bound, bound] and the derivative of the clamp (1 inside or on the boundary,
/// 0 outside). NaN stays NaN with gate 0.
template <real T>
struct clamped_value {
  T value;
  T gate;
};

template <real T>
RLCORE_HD constexpr clamped_value<T> clamp_log_ratio(T x, T bound) {
  const bool above = x > bound;
  const bool below = x < -bound;
  return {select(above, bound, select(below, -bound, x)), select(above | below, T(0), T(1))};
}

/// k3(x) / x^2 = sum_{j >= 0} (-x)^j / (j + 2)! for |x| < 1/4, by Horner: 6 terms in float,
/// 12 in double (truncation below half an ulp).
template <real T>
RLCORE_HD constexpr T k3_series_over_square(T x) {
  if constexpr (sizeof(T) == 4) {
    return T(1.0 / 2)
           + x
                 * (T(-1.0 / 6)
                    + x
                          * (T(1.0 / 24)
                             + x * (T(-1.0 / 120) + x * (T(1.0 / 720) + x * T(-1.0 / 5040)))));
  } else {
    const T tail =
        T(1.0 / 40320)
        + x
              * (T(-1.0 / 362880)
                 + x
                       * (T(1.0 / 3628800)
                          + x
                                * (T(-1.0 / 39916800)
                                   + x * (T(1.0 / 479001600) + x * T(-1.0 / 6227020800)))));
    return T(1.0 / 2)
           + x
                 * (T(-1.0 / 6)
                    + x
                          * (T(1.0 / 24)
                             + x
                                   * (T(-1.0 / 120)
                                      + x * (T(1.0 / 720) + x * (T(-1.0 / 5040) + x * tail)))));
  }
}

/// k3 = exp(-x) + x - 1 and d k3 / dx = 1 - exp(-x), given e = exp(-x): near x = 0 (|x| < 1/4)
/// the value comes from its Taylor series (no cancellation), elsewhere from the closed form.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD value_and_gradient<T> kl_k3_of_exp(T x, T e) {
  const T series = x * x * k3_series_over_square(x); // both computed: a select, not a branch
  const T closed = (e - T(1)) + x;
  return {select(abs(x) < T(0.25), series, closed), T(1) - e};
}

/// k3 = exp(-x) + x - 1 and d k3 / dx = 1 - exp(-x), with one exp (see kl_k3_of_exp).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD value_and_gradient<T> kl_k3(T x) {
  return kl_k3_of_exp(x, exp_vectorizable(-x));
}

/// k3 = exp(-x) + x - 1 and d k3 / dx = 1 - exp(-x) for |x| <= 86 (or NaN), with one
/// exp_vectorizable_bounded(-x). On the host for float, where that exp's range reduction is exact
/// (|x| < 0.34 < ln2 / 2: k == 0, r == -x) the value is the exp's own polynomial part r^2 p(r) (no
/// cancellation, no separate series), elsewhere the closed form (e - 1) + x; maximum relative
/// error of the value 1.4e-6 over [-86, 86] (at |x| ~ ln2 / 2, where the closed form starts;
/// 2.1e-7 for |x| < 0.34; measured against long double in tests/math; the series form of
/// kl_k3_of_exp: 2.4e-6). Double and device code: kl_k3_of_exp.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD value_and_gradient<T> kl_k3_bounded(T x) {
#if !RLCORE_IN_DEVICE_CODE
  if constexpr (std::is_same_v<T, float>) {
    const detail::exp_polynomial_split e = detail::exp_polynomial_bounded_split(-x);
    const bool reduced = abs(x) < detail::exp_polynomial_split::reduced_bound;
    return {select(reduced, e.excess, (e.value - T(1)) + x), T(1) - e.value};
  } else {
    return kl_k3_of_exp(x, exp_vectorizable_bounded(-x));
  }
#else
  return kl_k3_of_exp(x, exp_vectorizable_bounded(-x));
#endif
}

/// KL estimator value and gradient with respect to lp, given the importance ratio of
/// k3_importance already computed (the policy surrogate's ratio):
///   lp_minus_ref  x = lp - ref (unclamped)
///   ratio         r = exp(d), d = lp - old clamped to [-c, c] (used by k3_importance only)
///   ratio_gate    d r / d lp / r: 1 where the clamp of d is inactive or on its boundary, else 0
///   clamp         log-ratio clamp bound c, 0 < c <= 80 (as the options enforce), applied to x
///                 before any exp
/// Written with selects on the (uniform) estimator, so that a loop over tokens vectorises (k3's
/// exp is computed for every estimator).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD value_and_gradient<T>
kl_estimate_of_ratio(kl_estimator estimator, T lp_minus_ref, T ratio, T ratio_gate, T clamp) {
  clamped_value<T> x = clamp_log_ratio(lp_minus_ref, clamp);
  // computed for every estimator (no branch); |x| <= clamp <= 80
  value_and_gradient<T> k3 = kl_k3_bounded(x.value);
  const bool use_k3 = estimator == kl_estimator::k3 || estimator == kl_estimator::k3_plus;
  const bool use_abs = estimator == kl_estimator::abs;
  const bool use_k2 = estimator == kl_estimator::k2;
  const bool importance = estimator == kl_estimator::k3_importance;
  const bool straight_through =
      estimator == kl_estimator::k1_plus || estimator == kl_estimator::k3_plus;
  const T importance_value = ratio * k3.value;
  T value = select(use_k3, k3.value, x.value); // k1, k1_plus: x
  value = select(use_abs, abs(x.value), value);
  value = select(use_k2, T(0.5) * x.value * x.value, value);
  value = select(importance, importance_value, value);
  T gradient = select(estimator == kl_estimator::k3, k3.gradient * x.gate, x.gate); // k1: gate
  gradient = select(use_abs, sign(x.value) * x.gate, gradient);
  gradient = select(use_k2 | straight_through, x.value * x.gate, gradient);
  gradient =
      select(importance, importance_value * ratio_gate + ratio * k3.gradient * x.gate, gradient);
  return {value, gradient};
}

/// KL estimator value and gradient with respect to lp.
///   lp_minus_ref  x = lp - ref (unclamped)
///   lp_minus_old  d = lp - old (only used by k3_importance)
///   clamp         log-ratio clamp bound c, 0 < c <= 80, applied to x and d before any exp
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD value_and_gradient<T>
kl_estimate(kl_estimator estimator, T lp_minus_ref, T lp_minus_old, T clamp) {
  const clamped_value<T> d = clamp_log_ratio(lp_minus_old, clamp);
  T ratio = T(1);
  if (estimator == kl_estimator::k3_importance) {
    ratio = exp_vectorizable_bounded(d.value); // |d| <= clamp <= 80
  }
  return kl_estimate_of_ratio(estimator, lp_minus_ref, ratio, d.gate, clamp);
}

/// Output clamp of a KL value to [lo, hi]: the bound and gradient 0 where active (strictly
/// outside), unchanged otherwise.
template <real T>
RLCORE_HD constexpr value_and_gradient<T> clamp_kl_output(value_and_gradient<T> kl, T lo, T hi) {
  const bool above = kl.value > hi;
  const bool below = kl.value < lo;
  return {select(above, hi, select(below, lo, kl.value)), select(above | below, T(0), kl.gradient)};
}

} // namespace rlcore::math

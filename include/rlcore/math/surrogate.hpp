// Per-token (and per-sequence) policy-loss formulas: value and exact gradient.
//
// Every function takes the log-ratio delta = lp - old already clamped (see clamp_log_ratio in
// kl.hpp) and returns the loss term and its derivative with respect to delta (equal to the
// derivative with respect to lp); the caller multiplies by the clamp's gate. A is the advantage,
// a constant. Tie convention, everywhere: when the two branches of a max/min are equal (ratio
// exactly on a clip boundary, ratio == 1), the unclipped branch's gradient is taken.
#pragma once

#include "../config.hpp"
#include "functions.hpp"
#include "kl.hpp"

namespace rlcore::math {

/// A policy-loss term with its gradient and which clip (if any) is active.
template <real T>
struct surrogate_term {
  T value;
  T gradient;
  bool clipped_low;  ///< the lower clip bound is active (its constant branch wins strictly)
  bool clipped_high; ///< the upper clip bound is active
  bool dual_clipped; ///< the dual clip (-c * A) is active
};

/// PPO / GRPO clipped surrogate on ratio = exp(delta):
///   l = max(-A * u, -A * clip(ratio, 1 - eps_low, 1 + eps_high)),  u = ratio, or
///       u = min(ratio, delta_clip) when delta_clip > 0 (INTELLECT-2 delta clip);
///   dual clip (dual_clip > 0, meant > 1, applies when A < 0): l = min(l, -dual_clip * A).
/// d l / d delta = -A * ratio where the unclipped branch is taken (and ratio < delta_clip when the
/// delta clip is on), 0 where a clip is active.
/// Takes the ratio exp(delta) itself (callers that need it elsewhere compute it once); written with
/// selects only, so that a loop over tokens vectorises.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD surrogate_term<T>
clipped_surrogate_of_ratio(T ratio, T advantage, T eps_low, T eps_high, T dual_clip, T delta_clip) {
  const bool delta_clip_active = (delta_clip > T(0)) & (ratio > delta_clip);
  const T unclipped_ratio = select(delta_clip_active, delta_clip, ratio);
  const T unclipped = -advantage * unclipped_ratio;
  const T clipped = -advantage * clamp(ratio, T(1) - eps_low, T(1) + eps_high);
  const bool clip_wins = clipped > unclipped; // ties keep the unclipped branch
  const T value = select(clip_wins, clipped, unclipped);
  const T gradient = select(clip_wins | delta_clip_active, T(0), -advantage * ratio);
  const T floor_value = -dual_clip * advantage;
  const bool dual_clipped = (dual_clip > T(0)) & (advantage < T(0)) & (value > floor_value);
  const bool clipped_low = clip_wins & (ratio < T(1) - eps_low);
  const bool clipped_high = clip_wins & (ratio > T(1) + eps_high);
  return {select(dual_clipped, floor_value, value), select(dual_clipped, T(0), gradient),
          clipped_low, clipped_high, dual_clipped};
}

/// The clipped surrogate of the (clamped) log-ratio delta: clipped_surrogate_of_ratio(exp(delta),
/// ...); see there for the formula and gradient.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD surrogate_term<T>
clipped_surrogate(T delta, T advantage, T eps_low, T eps_high, T dual_clip, T delta_clip) {
  return clipped_surrogate_of_ratio(exp_vectorizable(delta), advantage, eps_low, eps_high,
                                    dual_clip, delta_clip);
}

/// SAPO soft gate on ratio = exp(delta) (computed by the caller):
///   l = -A * (4 / tau) * sigmoid(tau * (ratio - 1)), tau = tau_pos if A > 0 else tau_neg;
///   d l / d delta = -4 * A * s * (1 - s) * ratio with s = sigmoid(tau * (ratio - 1)).
/// sigmoid through e = exp_vectorizable(-z), z = tau * (ratio - 1) >= -tau (e <= exp(tau)):
/// s = 1 / (1 + e), s (1 - s) = s * (e / (1 + e)). Selects only (a loop over tokens vectorises).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD surrogate_term<T>
sapo_surrogate_of_ratio(T ratio, T advantage, T tau_pos, T tau_neg) {
  const T tau = select(advantage > T(0), tau_pos, tau_neg);
  const T z = tau * (ratio - T(1));
  const T e = exp_vectorizable(-z);
  const T s = T(1) / (T(1) + e);
  const T s_one_minus_s = s * (e / (T(1) + e));
  return {-advantage * (T(4) / tau) * s, -T(4) * advantage * s_one_minus_s * ratio, false, false,
          false};
}

/// SAPO of the (clamped) log-ratio delta: sapo_surrogate_of_ratio(exp(delta), ...); see there.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD surrogate_term<T> sapo_surrogate(T delta, T advantage,
                                                                      T tau_pos, T tau_neg) {
  return sapo_surrogate_of_ratio(exp_vectorizable(delta), advantage, tau_pos, tau_neg);
}

/// CISPO on ratio = exp(delta) (computed by the caller):
///   l = -stopgrad(min(ratio, 1 + eps_high)) * A * lp;  d l / d lp = -min(ratio, 1 + eps_high) * A
/// (never zeroed; the ratio is a constant, so the caller must not apply the clamp gate).
/// clipped_high reports the truncation. Selects only (a loop over tokens vectorises).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD surrogate_term<T>
cispo_surrogate_of_ratio(T ratio, T log_prob, T advantage, T eps_high) {
  const bool truncated = ratio > T(1) + eps_high;
  const T weight = select(truncated, T(1) + eps_high, ratio);
  return {-weight * advantage * log_prob, -weight * advantage, false, truncated, false};
}

/// CISPO of the (clamped) log-ratio delta: cispo_surrogate_of_ratio(exp(delta), ...); see there.
template <real T>
RLCORE_HD inline surrogate_term<T> cispo_surrogate(T delta, T log_prob, T advantage, T eps_high) {
  return cispo_surrogate_of_ratio(exp_vectorizable(delta), log_prob, advantage, eps_high);
}

/// REINFORCE / GPG: l = -A * lp; d l / d lp = -A.
template <real T>
RLCORE_HD constexpr surrogate_term<T> reinforce_surrogate(T log_prob, T advantage) {
  return {-advantage * log_prob, -advantage, false, false, false};
}

/// GMPO per-token clipped log-ratio (clip in log space by the sign of A):
///   m = min(delta, clamp(delta, -eps_low, eps_high)) for A > 0,
///   m = max(delta, clamp(delta, -eps_low, eps_high)) for A < 0, m = 0 for A = 0;
/// gate = d m / d delta (1 on the unclipped branch, ties included; 0 where the clip is active).
template <real T>
struct gmpo_log_ratio {
  T value;
  T gate;
  bool clipped_low;
  bool clipped_high;
};

/// GMPO's clip flags: the upper bound is active where A > 0 and delta > eps_high, the lower where
/// A < 0 and delta < -eps_low.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr bool gmpo_clipped_high(T delta, T advantage,
                                                                      T eps_high) {
  return (advantage > T(0)) & (delta > eps_high);
}
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr bool gmpo_clipped_low(T delta, T advantage,
                                                                     T eps_low) {
  return (advantage < T(0)) & (delta < -eps_low);
}

/// GMPO's gate d m / d delta alone: 0 where a clip is active or A == 0, else 1.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr T gmpo_clip_gate(T delta, T advantage, T eps_low,
                                                                T eps_high) {
  const bool clipped_high = gmpo_clipped_high(delta, advantage, eps_high);
  const bool clipped_low = gmpo_clipped_low(delta, advantage, eps_low);
  const bool constant = clipped_high | clipped_low | (advantage == T(0)); // no branches
  return select(constant, T(0), T(1));
}

/// GMPO's clipped log-ratio m alone (see gmpo_clip_log_ratio).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr T gmpo_clipped_log_ratio(T delta, T advantage,
                                                                        T eps_low, T eps_high) {
  return select(gmpo_clipped_high(delta, advantage, eps_high), eps_high,
                select(gmpo_clipped_low(delta, advantage, eps_low), -eps_low,
                       select(advantage == T(0), T(0), delta)));
}

/// Selects only (a loop over tokens vectorises); NaN delta or advantage: as the unclipped branch
/// (value delta, gate 1) unless A == 0.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr gmpo_log_ratio<T>
gmpo_clip_log_ratio(T delta, T advantage, T eps_low, T eps_high) {
  return {gmpo_clipped_log_ratio(delta, advantage, eps_low, eps_high),
          gmpo_clip_gate(delta, advantage, eps_low, eps_high),
          gmpo_clipped_low(delta, advantage, eps_low),
          gmpo_clipped_high(delta, advantage, eps_high)};
}

/// A bounded importance weight w = exp(log_w) (log_w already clamped) and whether the bound
/// changed it.
template <real T>
struct bounded_weight {
  T value;
  bool corrected;
};

/// TIS on a weight w: whether min(w, cap) bounds it (w > cap), and min(w, cap) itself.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr bool weight_truncated(T w, T cap) {
  return w > cap;
}
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr T truncated_weight(T w, T cap) {
  return select(weight_truncated(w, cap), cap, w);
}

/// MIS on a weight w: whether it lies outside [low, high], and w there, 0 outside.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr bool weight_masked(T w, T low, T high) {
  return (w < low) | (w > high);
}
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr T masked_weight(T w, T low, T high) {
  return select(weight_masked(w, low, high), T(0), w);
}

/// The importance weight w = exp(log_w) of a log-ratio clamped to |log_w| <= 80 by the caller
/// (exp_vectorizable: on the host for float the branch-free polynomial, ~1.5 ulp; expf / exp
/// elsewhere).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD T importance_weight_of_log_ratio(T log_w) {
  return exp_vectorizable(log_w);
}

/// Truncated importance sampling (TIS): min(w, cap), w = importance_weight_of_log_ratio(log_w).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD bounded_weight<T> truncated_importance_weight(T log_w, T cap) {
  const T w = importance_weight_of_log_ratio(log_w);
  return {truncated_weight(w, cap), weight_truncated(w, cap)};
}

/// Masked importance sampling (MIS): w inside [low, high], 0 outside; w as
/// truncated_importance_weight.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD bounded_weight<T> masked_importance_weight(T log_w, T low,
                                                                                T high) {
  const T w = importance_weight_of_log_ratio(log_w);
  return {masked_weight(w, low, high), weight_masked(w, low, high)};
}

} // namespace rlcore::math

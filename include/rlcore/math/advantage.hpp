// Scalar formulas of the advantage estimators and reward utilities (one place each). All inputs
// and results are double: the algorithms accumulate in double and cast once when they write.
#pragma once

#include "../config.hpp"
#include "functions.hpp"

namespace rlcore::math {

/// One step of a reverse affine scan, c' = first * c + second (member names follow the pair of
/// the execution contract: first = multiplier, second = offset).
struct affine_step {
  double first = 1;
  double second = 0;
};

/// Group-normalised advantage: (s - mean) / (std + eps) when divide_by_std, else s - mean
/// (Dr. GRPO). The caller passes the std of its scaling (group or batch).
RLCORE_HD inline double standardized_advantage(double score, double mean, double std, double eps,
                                               bool divide_by_std) {
  const double centred = score - mean;
  return divide_by_std ? centred / (std + eps) : centred;
}

/// RLOO: s_i - mean_{j != i} s_j = G / (G - 1) * (s_i - mean_g) for a group of size G;
/// 0 for G < 2 (no other response to compare with).
RLCORE_HD inline double leave_one_out_advantage(double score, double group_mean,
                                                double group_size) {
  return group_size < 2 ? 0.0 : group_size / (group_size - 1.0) * (score - group_mean);
}

/// Whitened value (x - mean) / sqrt(var + eps), or x - mean when mean_only.
RLCORE_HD inline double whitened(double x, double mean, double var, double eps, bool mean_only) {
  const double centred = x - mean;
  return mean_only ? centred : centred / sqrt(var + eps);
}

/// DAPO soft overlong punishment (Yu et al. 2025, eq. 13) for a response of `length` tokens:
///   0                                      if length <= Lmax - Lcache
///   ((Lmax - Lcache) - length) / Lcache    if Lmax - Lcache < length <= Lmax   (0 .. -1, linear)
///   -1                                     if length > Lmax
RLCORE_HD inline double overlong_penalty(double length, double max_length, double cache_length) {
  const double soft_start = max_length - cache_length;
  if (length <= soft_start) {
    return 0.0;
  }
  if (length > max_length) {
    return -1.0;
  }
  return (soft_start - length) / cache_length;
}

/// Return-to-go step: G_t = r_t + gamma * G_{t+1} at a valid token; the carry passes unchanged
/// through a masked token (multi-turn observation tokens do not reset it).
RLCORE_HD inline affine_step discounted_return_step(bool valid, double gamma, double reward) {
  return valid ? affine_step{gamma, reward} : affine_step{1.0, 0.0};
}

/// Suffix-sum step: the carry accumulates `term` (0 where nothing is added).
RLCORE_HD inline affine_step suffix_sum_step(double term) {
  return affine_step{1.0, term};
}

/// GAE (Schulman et al. 2016) with masks: delta_t = (r_t - V_t) + gamma V_next, A_t = delta_t +
/// gamma lambda A_next over the valid tokens of a row (V_next, A_next: of the next valid token, 0
/// past the last). Its carry is ONE number: at a valid token t
///   c_t = V_t + lambda * A_t                       (gae_carry)
///   A_t = (r_t - V_t) + gamma * c_next             (gae_advantage_from_carry)
/// with c_next the carry of the next valid token of the row (0 past the last), since
/// gamma * V_next + gamma lambda * A_next = gamma * c_next. Read backwards, a valid token maps the
/// carry affinely, c_next -> gamma lambda * c_next + (V_t + lambda (r_t - V_t)), and a masked
/// token leaves it unchanged, so GAE is one scan of affine maps of one number (gae_carry_map).
template <class T>
RLCORE_HD constexpr T gae_advantage_from_carry(T gamma, T reward, T value, T next_carry) {
  return (reward - value) + gamma * next_carry;
}

/// GAE's one-number carry of a valid token: c_t = V_t + lambda * A_t (gae_advantage_from_carry).
template <class T>
RLCORE_HD constexpr T gae_carry(T lambda, T value, T advantage) {
  return value + lambda * advantage;
}

/// The map of a segment of a row on GAE's one-number carry, read backwards: the carry c at the
/// segment's end becomes multiplier * c + offset at its first valid token, multiplier =
/// (gamma lambda)^(valid tokens of the segment), offset = the carry made from c = 0. The identity
/// (multiplier 1, offset 0) is the map of a segment without valid tokens.
template <class T>
struct gae_carry_map {
  T multiplier = 1; ///< (gamma lambda)^(valid tokens)
  T offset = 0;     ///< carry at the segment's first valid token from the carry 0 at its end
};

/// Extends the map `later` (the tokens after t) by token t: a valid token multiplies by
/// gamma lambda and carries gae_carry(lambda, V_t, gae_advantage_from_carry(gamma, r_t, V_t,
/// later.offset)); a masked token leaves the map as it is.
template <class T>
RLCORE_HD constexpr gae_carry_map<T> gae_carry_fold_token(const gae_carry_map<T>& later, bool valid,
                                                          T gamma, T lambda, T gamma_lambda,
                                                          T reward, T value) {
  if (!valid) {
    return later;
  }
  return {gamma_lambda * later.multiplier,
          gae_carry(lambda, value, gae_advantage_from_carry(gamma, reward, value, later.offset))};
}

/// The map of two adjacent segments: `later` (the later tokens) applied first, then `earlier`:
///   c -> earlier.multiplier * (later.multiplier * c + later.offset) + earlier.offset
///      = (earlier.multiplier * later.multiplier, earlier.multiplier * later.offset +
///      earlier.offset).
/// Associative up to rounding, no branches; the identity is gae_carry_map<T>{}.
template <class T>
RLCORE_HD constexpr gae_carry_map<T> gae_carry_then(const gae_carry_map<T>& later,
                                                    const gae_carry_map<T>& earlier) {
  return {earlier.multiplier * later.multiplier,
          earlier.multiplier * later.offset + earlier.offset};
}

} // namespace rlcore::math

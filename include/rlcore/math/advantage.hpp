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

/// Next-value step: the carry becomes V_t at a valid token and passes unchanged through a masked
/// one, so the exclusive carry at t is the value of the next valid token (0 past the last).
RLCORE_HD inline affine_step next_value_step(bool valid, double value) {
  return valid ? affine_step{0.0, value} : affine_step{1.0, 0.0};
}

/// GAE step: A_t = delta_t + gamma * lambda * A_{t+1}, delta_t = r_t + gamma * V_next - V_t at a
/// valid token (V_next: value of the next valid token, 0 past the last); unchanged carry at a
/// masked token.
RLCORE_HD inline affine_step gae_step(bool valid, double gamma, double lambda, double reward,
                                      double value, double next_value) {
  return valid ? affine_step{gamma * lambda, reward + gamma * next_value - value}
               : affine_step{1.0, 0.0};
}

/// Step counting the valid tokens from t onwards (exclusive carry: valid tokens after t; a valid
/// token with exclusive carry 0 is the last valid token of its row).
RLCORE_HD inline affine_step valid_count_step(bool valid) {
  return affine_step{1.0, valid ? 1.0 : 0.0};
}

/// Suffix-sum step: the carry accumulates `term` (0 where nothing is added).
RLCORE_HD inline affine_step suffix_sum_step(double term) {
  return affine_step{1.0, term};
}

/// Affine map of the fused GAE scan on the carry pair (v, a) = (value of the next valid token,
/// advantage of the next valid token), read backwards over a row:
///   (v, a) -> (keep_value * v + value,  value_gain * v + advantage_gain * a + advantage).
/// One valid token t maps the carry from t + 1 to the carry from t:
///   v' = V_t,  a' = A_t = (r_t - V_t) + gamma * v + gamma * lambda * a   (GAE's two recurrences),
/// a masked token is the identity (both carries pass through). Maps of consecutive tokens compose
/// (gae_then) into a map of the same form (the linear part stays lower triangular, keep_value in
/// {0, 1}), so GAE is one associative scan over these maps: no per-token scratch.
template <class T>
struct gae_carry_map {
  T keep_value = 1;     ///< 1 when the segment has no valid token, else 0
  T value_gain = 0;     ///< d v' / d v
  T advantage_gain = 1; ///< d a' / d a = (gamma * lambda)^(valid tokens of the segment)
  T value = 0;          ///< v' of carry (0, 0)
  T advantage = 0;      ///< a' of carry (0, 0)
};

/// The map of one token: (0, gamma, gamma * lambda, V, r - V) when valid, the identity when masked.
template <class T>
RLCORE_HD constexpr gae_carry_map<T> gae_token_map(bool valid, T gamma, T lambda, T reward,
                                                   T value) {
  return valid ? gae_carry_map<T>{T(0), gamma, gamma * lambda, value, reward - value}
               : gae_carry_map<T>{};
}

/// The map that applies `first`, then `second` (first = the later tokens of a reverse scan): with
/// f = first, g = second, (g o f) = (g.k f.k, g.q f.k + g.s f.q, g.s f.s, g.k f.v + g.v,
/// g.q f.v + g.s f.a + g.a). Associative; the identity is gae_carry_map<T>{}.
template <class T>
RLCORE_HD constexpr gae_carry_map<T> gae_then(const gae_carry_map<T>& first,
                                              const gae_carry_map<T>& second) {
  return {
      second.keep_value * first.keep_value,
      second.value_gain * first.keep_value + second.advantage_gain * first.value_gain,
      second.advantage_gain * first.advantage_gain, second.keep_value * first.value + second.value,
      second.value_gain * first.value + second.advantage_gain * first.advantage + second.advantage};
}

/// Advantage of a valid token given the carry from the next token (the map applied to the
/// carry, second component): A_t = (r_t - V_t) + gamma * V_next + gamma * lambda * A_next.
template <class T>
RLCORE_HD constexpr T gae_advantage_after(const gae_carry_map<T>& token, T next_value,
                                          T next_advantage) {
  return token.value_gain * next_value + token.advantage_gain * next_advantage + token.advantage;
}

} // namespace rlcore::math

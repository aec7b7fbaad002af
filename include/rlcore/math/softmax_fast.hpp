// Online softmax statistics in the base-2 domain, for the GPU kernels' hot loop over fp32
// accumulators of bf16 / fp16 / fp32 logits (math/softmax.hpp holds the exact formulas that the
// CPU path and the kernels' fallback use).
//
// With k = log2(e) / tau, a logit z has the base-2 exponent d = z k - m k relative to the running
// maximum m (raw units): e^((z - m) / tau) = 2^d. Per logit that is one FFMA and one exp2_fast (one
// MUFU.EX2 on the device), and the entropy's weighted sum takes one more FFMA:
//   S = sum_j 2^(d_j),   W2 = sum_j 2^(d_j) d_j   (W = W2 ln 2 is the natural-log weighted sum).
// The maximum is raised once per chunk of logits (softmax_fast_raise with the chunk's maximum,
// then softmax_fast_observe for each logit of the chunk), not per logit.
//
// No guards in the hot loop: a NaN or +-inf logit, or a finite logit so large that z k overflows,
// makes S or W2 NaN (NaN propagates through the exponential; 2^-inf = 0 and 0 * -inf = NaN in W2;
// inf - inf = NaN in the rescale). softmax_fast_usable says whether the statistics are exact to
// rounding; when they are not, the caller recomputes the row with the exact, guarded formulas of
// math/softmax.hpp (which also decide whether the row had non-finite logits).
#pragma once

#include "../config.hpp"
#include "exp2_fast.hpp"
#include "functions.hpp"
#include "softmax.hpp"

namespace rlcore::math {

/// Base-2 online softmax statistics of a set of logits (a thread's share of a row, or a tile).
///   max      m: the largest raw logit observed so far (-finite_max when none)
///   offset   m k (k = log2(e) / tau), the base-2 exponent of m
///   sum      S = sum_j 2^(z_j k - m k)
///   weighted W2 = sum_j 2^(z_j k - m k) (z_j k - m k)
/// An empty state has sum == 0.
template <real T>
struct softmax_fast_state {
  T max = -finite_max<T>();
  T offset = -finite_max<T>();
  T sum = T(0);
  T weighted = T(0);
};

/// Raises the state's maximum to `new_max` (the maximum of the next chunk) if it is larger,
/// rescaling S and W2 by 2^shift, shift = (m_old - m_new) k <= 0:
///   S' = S 2^shift,  W2' = 2^shift (W2 + shift S).
template <real T>
RLCORE_HD inline void softmax_fast_raise(softmax_fast_state<T>& s, T new_max, T k) {
  if (new_max > s.max) {
    const T new_offset = new_max * k;
    if (s.sum != T(0)) {
      const T shift = s.offset - new_offset;
      const T scale = exp2_fast(shift);
      s.weighted = scale * (s.weighted + shift * s.sum);
      s.sum *= scale;
    }
    s.max = new_max;
    s.offset = new_offset;
  }
}

/// Adds one logit z <= s.max (call softmax_fast_raise with the chunk maximum first):
///   d = z k - m k (one FFMA), S += 2^d, W2 += 2^d d.
template <real T>
RLCORE_HD inline void softmax_fast_observe(softmax_fast_state<T>& s, T z, T k) {
  const T d = z * k - s.offset;
  const T e = exp2_fast(d);
  s.sum += e;
  s.weighted += e * d;
}

/// True for a state that observed nothing. Not the same as sum == 0: a state that met a +inf,
/// -inf or overflowing logit can have sum == 0 with a NaN weighted sum or an infinite offset, and
/// must not be dropped as empty by a merge (that hid such rows from softmax_fast_usable).
template <real T>
RLCORE_HD inline bool softmax_fast_empty(const softmax_fast_state<T>& s) {
  return s.sum == T(0) && s.weighted == T(0) && s.max == -finite_max<T>();
}

/// Merges the statistics of two disjoint sets of logits (same k). NaN / inf in either propagates
/// (the result is then not softmax_fast_usable).
template <real T>
RLCORE_HD inline softmax_fast_state<T> softmax_fast_merge(const softmax_fast_state<T>& a,
                                                          const softmax_fast_state<T>& b) {
  if (softmax_fast_empty(a)) {
    return b;
  }
  if (softmax_fast_empty(b)) {
    return a;
  }
  // Field by field, by value: selecting a reference to one of two states held in registers makes
  // nvcc place both in local memory (16 bytes each per merge).
  const bool b_higher = a.max < b.max;
  softmax_fast_state<T> out;
  out.max = b_higher ? b.max : a.max;
  out.offset = b_higher ? b.offset : a.offset;
  out.sum = b_higher ? b.sum : a.sum;
  out.weighted = b_higher ? b.weighted : a.weighted;
  const T low_offset = b_higher ? a.offset : b.offset;
  const T low_sum = b_higher ? a.sum : b.sum;
  const T low_weighted = b_higher ? a.weighted : b.weighted;
  const T shift = low_offset - out.offset; // <= 0
  const T scale = exp2_fast(shift);
  out.sum += scale * low_sum;
  out.weighted += scale * (low_weighted + shift * low_sum);
  return out;
}

/// True when the statistics are finite, i.e. exact to rounding: every logit was finite and no
/// z k overflowed. Otherwise recompute the row with math::row_softmax / softmax_observe.
template <real T>
RLCORE_HD inline bool softmax_fast_usable(const softmax_fast_state<T>& s) {
  return isfinite(s.sum) && isfinite(s.weighted) && isfinite(s.offset);
}

/// The natural-log statistics of math/softmax.hpp (max, S, W = W2 ln 2): log_softmax_at,
/// softmax_entropy and token_log_prob_logit_grad apply unchanged.
template <real T>
RLCORE_HD inline softmax_partial<T> softmax_fast_finish(const softmax_fast_state<T>& s) {
  softmax_partial<T> out;
  out.max = s.max;
  out.sum = s.sum;
  out.weighted = s.weighted * ln_2<T>();
  return out;
}

/// The base-2 offset c of the probabilities, p_j = 2^(z_j k - c) with c = m k + log2 S, so that
/// softmax_fast_prob costs one FFMA and one exp2_fast per logit.
template <real T>
RLCORE_HD inline T softmax_fast_prob_offset(const softmax_fast_state<T>& s) {
  return s.offset + log2(s.sum);
}

/// p_j = softmax(z / tau)_j = 2^(z k - c), c = softmax_fast_prob_offset.
template <real T>
RLCORE_HD inline T softmax_fast_prob(T z, T k, T prob_offset) {
  return exp2_fast(z * k - prob_offset);
}

/// Gradient w.r.t. logit z_j of g_lp * lp, lp = log p_id, from p_j: (1[j == id] - p_j) g_lp / tau
/// (the log-prob part of token_log_prob_logit_grad, math/softmax.hpp).
template <real T>
RLCORE_HD inline T log_prob_logit_grad(T p, bool is_target, T grad_log_prob, T inv_temperature) {
  return inv_temperature * log_prob_grad_term(p, is_target, grad_log_prob);
}

} // namespace rlcore::math

// Softmax over one row of logits: stable log-sum-exp, entropy, log-probs, full KL and their
// gradients w.r.t. the logits, with a temperature tau applied first (x = z / tau).
//
// Shape legend: one row of V logits z_0 .. z_{V-1}, read through a row accessor `row(j)` whose
// result converts to the accumulator type Acc (logit_accumulator<T>: double for double logits,
// float for float, bf16 and half). Every function is RLCORE_HD: the CPU algorithms in
// objective/logits*.hpp and the CUDA kernels use the same formulas.
//
// Stability: every exponent is d_j = (z_j - m) / tau with m the row maximum, so d_j <= 0 and
// exp(d_j) <= 1. d_j is floored at -finite_max (a difference of two huge finite logits such as
// -3e38 - 3e38 overflows to -inf otherwise): finite logits always give finite results, exp of a
// floored d_j is 0, and every `p_j * something` term is selected to 0 where p_j == 0 rather than
// multiplied (0 * inf is NaN).
//
// Two ways to get the row statistics (m, S = sum_j exp(d_j), W = sum_j exp(d_j) d_j):
//  - row_softmax: two passes (max, then sums), exact to rounding; what the CPU path uses.
//  - softmax_observe / softmax_merge: online (max, sum) state for tiles: a thread or block folds
//    its share of the row into a softmax_partial and partials merge in any grouping (the merge is
//    associative up to rounding). A partial that saw nothing has sum == 0 and merges as identity,
//    so tiles that overhang the vocabulary must simply not observe their padding lanes.
// From the statistics: log p_j = d_j - log S, entropy H = log S - W / S.
#pragma once

#include "../config.hpp"
#include "finite.hpp"
#include "functions.hpp"

#include <type_traits>

namespace rlcore::math {

/// Accumulator type for logits of type T: double for double, float for everything else (float,
/// bf16, half: low-precision logits are accumulated in fp32).
template <class T>
using logit_accumulator =
    std::conditional_t<std::is_same_v<std::remove_cv_t<T>, double>, double, float>;

/// d = (z - m) * inv_temperature, the temperature-scaled logit shifted by the row maximum m
/// (z <= m), floored at -finite_max so that it stays finite when z - m overflows. NaN propagates.
template <real T>
RLCORE_HD inline T shifted_logit(T z, T m, T inv_temperature) {
  return max((z - m) * inv_temperature, -finite_max<T>());
}

/// Softmax statistics of a set of logits (a row or a tile of one):
///   max       m, the largest raw (unscaled) logit seen (-finite_max when none)
///   sum       S = sum_j exp(d_j),        d_j = shifted_logit(z_j, m, 1 / tau)
///   weighted  W = sum_j exp(d_j) d_j     (terms with exp(d_j) == 0 are 0)
/// An empty partial has sum == 0.
template <real T>
struct softmax_partial {
  T max = -finite_max<T>();
  T sum = T(0);
  T weighted = T(0);
};

/// Adds one logit z to the online statistics p (temperature 1 / inv_temperature). When z raises
/// the maximum by delta (scaled), the old terms are rescaled: S' = S e^-delta + 1 and
/// W' = e^-delta (W - delta S) (0 when e^-delta underflows).
template <real T>
RLCORE_HD inline void softmax_observe(softmax_partial<T>& p, T z, T inv_temperature) {
  if (z > p.max) {
    const T shift = shifted_logit(p.max, z, inv_temperature); // -delta <= 0
    const T scale = exp(shift);
    p.weighted = scale > T(0) ? scale * (p.weighted + shift * p.sum) : T(0);
    p.sum = p.sum * scale + T(1);
    p.max = z;
  } else {
    const T d = shifted_logit(z, p.max, inv_temperature);
    const T e = exp(d);
    p.sum += e;
    p.weighted += e > T(0) ? e * d : T(0);
  }
}

/// Merges the statistics of two disjoint sets of logits (tiles of one row).
template <real T>
RLCORE_HD inline softmax_partial<T> softmax_merge(const softmax_partial<T>& a,
                                                  const softmax_partial<T>& b, T inv_temperature) {
  if (a.sum == T(0)) {
    return b;
  }
  if (b.sum == T(0)) {
    return a;
  }
  const T m = max(a.max, b.max);
  const T shift_a = shifted_logit(a.max, m, inv_temperature);
  const T shift_b = shifted_logit(b.max, m, inv_temperature);
  const T scale_a = exp(shift_a);
  const T scale_b = exp(shift_b);
  softmax_partial<T> out;
  out.max = m;
  out.sum = a.sum * scale_a + b.sum * scale_b;
  out.weighted = (scale_a > T(0) ? scale_a * (a.weighted + shift_a * a.sum) : T(0))
                 + (scale_b > T(0) ? scale_b * (b.weighted + shift_b * b.sum) : T(0));
  return out;
}

/// log p_j = d_j - log S for a logit z of a row with maximum `row_max` and log S = `log_sum`
/// (log(stats.sum), computed once per row), floored finite.
template <real T>
RLCORE_HD inline T log_softmax_from(T z, T row_max, T log_sum, T inv_temperature) {
  return max(shifted_logit(z, row_max, inv_temperature) - log_sum, -finite_max<T>());
}

/// log p_j = d_j - log S for a logit z of the row whose statistics are p (floored finite).
template <real T>
RLCORE_HD inline T log_softmax_at(const softmax_partial<T>& p, T z, T inv_temperature) {
  return log_softmax_from(z, p.max, log(p.sum), inv_temperature);
}

/// Entropy of the softmax: H = log S - W / S = -sum_j p_j log p_j, floored at 0 (rounding).
template <real T>
RLCORE_HD inline T softmax_entropy(const softmax_partial<T>& p) {
  return max(log(p.sum) - p.weighted / p.sum, T(0));
}

/// A sum taken in blocks of 256 terms (each block summed in order, then the block sums): the
/// rounding error of a V-term float sum grows like 256 + V / 256 rather than V. Deterministic.
template <real T>
struct blocked_sum {
  T total = T(0);
  T block = T(0);
  int count = 0;
  RLCORE_HD void add(T x) {
    block += x;
    if (++count == 256) {
      total += block;
      block = T(0);
      count = 0;
    }
  }
  [[nodiscard]] RLCORE_HD T value() const { return total + block; }
};

/// Row statistics from two passes over the row, and whether every logit was finite.
template <real T>
struct row_softmax_result {
  softmax_partial<T> stats;
  bool finite = true;
};

/// Statistics of the V logits row(0) .. row(V - 1) at temperature 1 / inv_temperature: pass 1
/// finds the maximum (and checks finiteness), pass 2 sums exp(d_j) and exp(d_j) d_j.
template <real Acc, class Row>
RLCORE_HD inline row_softmax_result<Acc> row_softmax(const Row& row, index_t vocab,
                                                     Acc inv_temperature) {
  row_softmax_result<Acc> out;
  Acc m = -finite_max<Acc>();
  bool finite = true;
  for (index_t j = 0; j < vocab; ++j) {
    const auto z = static_cast<Acc>(row(j));
    finite = finite && isfinite(z);
    m = max(m, z);
  }
  out.finite = finite;
  out.stats.max = m;
  blocked_sum<Acc> sum;
  blocked_sum<Acc> weighted;
  for (index_t j = 0; j < vocab; ++j) {
    const Acc d = shifted_logit(static_cast<Acc>(row(j)), m, inv_temperature);
    const Acc e = exp(d);
    sum.add(e);
    weighted.add(e > Acc(0) ? e * d : Acc(0));
  }
  out.stats.sum = sum.value();
  out.stats.weighted = weighted.value();
  return out;
}

/// g_lp (1[j == id] - p_j): the derivative of g_lp * log p_id w.r.t. z_j / tau.
template <real T>
RLCORE_HD inline T log_prob_grad_term(T p, bool is_target, T grad_log_prob) {
  return (is_target ? grad_log_prob : T(0)) - grad_log_prob * p;
}

/// Gradient w.r.t. logit z_j of g_lp * lp + g_entropy * H, where lp = log p_id:
///   d lp / dz_j = (1[j == id] - p_j) / tau,   dH / dz_j = -p_j (log p_j + H) / tau.
/// The entropy term is selected to 0 where p_j == 0.
template <real T>
RLCORE_HD inline T token_log_prob_logit_grad(T log_p, bool is_target, T grad_log_prob,
                                             T grad_entropy, T entropy, T inv_temperature) {
  const T p = exp(log_p);
  const T from_log_prob = log_prob_grad_term(p, is_target, grad_log_prob);
  const T from_entropy = p > T(0) ? -p * (log_p + entropy) : T(0);
  return inv_temperature * (from_log_prob + grad_entropy * from_entropy);
}

/// Writes (accumulate == false) or adds (accumulate == true) to out(j), j < V, the gradient of
/// g_lp * log p_id + g_entropy * H w.r.t. the row's logits (token_log_prob_logit_grad). Each out(j)
/// is written after row(j) is read, so out may alias row (in-place backward). Stored with
/// saturating_cast: an accumulated sum never overflows to +-inf.
template <real Acc, class Row, class Out>
RLCORE_HD inline void row_token_log_prob_grad(const Row& row, index_t vocab, index_t target,
                                              const softmax_partial<Acc>& stats,
                                              Acc inv_temperature, Acc grad_log_prob,
                                              Acc grad_entropy, bool accumulate, const Out& out) {
  const Acc entropy = softmax_entropy(stats);
  const Acc log_sum = log(stats.sum);
  using E = std::remove_reference_t<decltype(out(index_t{0}))>;
  for (index_t j = 0; j < vocab; ++j) {
    const Acc log_p =
        log_softmax_from(static_cast<Acc>(row(j)), stats.max, log_sum, inv_temperature);
    const Acc g = token_log_prob_logit_grad(log_p, j == target, grad_log_prob, grad_entropy,
                                            entropy, inv_temperature);
    out(j) = saturating_cast<E>(accumulate ? static_cast<Acc>(out(j)) + g : g);
  }
}

/// One term of the full KL: p (log p - log q) with p = exp(log_p), 0 where p == 0; the log-ratio
/// is clamped to +-finite_max so that it stays finite.
template <real T>
RLCORE_HD inline T kl_term(T log_p, T log_q) {
  const T p = exp(log_p);
  const T log_ratio = clamp(log_p - log_q, -finite_max<T>(), finite_max<T>());
  return p > T(0) ? p * log_ratio : T(0);
}

/// KL(pi || ref) = sum_j p_j (log p_j - log q_j) over one row, p = softmax(z / tau) with
/// statistics `p_stats` of `row`, q = softmax(z_ref / tau) with `q_stats` of `ref_row`. Clamped to
/// [0, finite_max] (KL >= 0; negative values are rounding).
template <real Acc, class Row, class RefRow>
RLCORE_HD inline Acc row_full_kl(const Row& row, const softmax_partial<Acc>& p_stats,
                                 const RefRow& ref_row, const softmax_partial<Acc>& q_stats,
                                 index_t vocab, Acc inv_temperature) {
  const Acc log_sum_p = log(p_stats.sum);
  const Acc log_sum_q = log(q_stats.sum);
  blocked_sum<Acc> kl;
  for (index_t j = 0; j < vocab; ++j) {
    const Acc log_p =
        log_softmax_from(static_cast<Acc>(row(j)), p_stats.max, log_sum_p, inv_temperature);
    const Acc log_q =
        log_softmax_from(static_cast<Acc>(ref_row(j)), q_stats.max, log_sum_q, inv_temperature);
    kl.add(kl_term(log_p, log_q));
  }
  return clamp(kl.value(), Acc(0), finite_max<Acc>());
}

/// Gradient of g * KL(pi || ref) w.r.t. policy logit z_j: g p_j (log p_j - log q_j - KL) / tau,
/// 0 where p_j == 0, the bracket clamped to +-finite_max and the result saturated at +-finite_max.
/// Why saturate: with logits near the bf16 maximum, log q_j is floored at -finite_max, so p_j *
/// bracket reaches ~finite_max / 2 for p_j ~ 1/2 and the factor g / tau (|g| > 1 or tau < 1) made
/// it overflow to +-inf although every input is finite. Every factor is finite, so the product is
/// finite or +-inf (never NaN) and saturating it keeps the exact sign.
template <real T>
RLCORE_HD inline T full_kl_logit_grad(T log_p, T log_q, T kl, T grad_kl, T inv_temperature) {
  const T p = exp(log_p);
  const T bracket = saturate(saturate(log_p - log_q) - kl);
  return p > T(0) ? saturate(inv_temperature * (grad_kl * (p * bracket))) : T(0);
}

/// Writes or adds to out(j), j < V, the gradient of g * KL(pi || ref) w.r.t. the policy logits of
/// one row (full_kl_logit_grad), saturated to out's finite range (saturating_cast). out may alias
/// row.
template <real Acc, class Row, class RefRow, class Out>
RLCORE_HD inline void row_full_kl_grad(const Row& row, const softmax_partial<Acc>& p_stats,
                                       const RefRow& ref_row, const softmax_partial<Acc>& q_stats,
                                       index_t vocab, Acc inv_temperature, Acc kl, Acc grad_kl,
                                       bool accumulate, const Out& out) {
  const Acc log_sum_p = log(p_stats.sum);
  const Acc log_sum_q = log(q_stats.sum);
  using E = std::remove_reference_t<decltype(out(index_t{0}))>;
  for (index_t j = 0; j < vocab; ++j) {
    const Acc log_p =
        log_softmax_from(static_cast<Acc>(row(j)), p_stats.max, log_sum_p, inv_temperature);
    const Acc log_q =
        log_softmax_from(static_cast<Acc>(ref_row(j)), q_stats.max, log_sum_q, inv_temperature);
    const Acc g = full_kl_logit_grad(log_p, log_q, kl, grad_kl, inv_temperature);
    out(j) = saturating_cast<E>(accumulate ? static_cast<Acc>(out(j)) + g : g);
  }
}

} // namespace rlcore::math

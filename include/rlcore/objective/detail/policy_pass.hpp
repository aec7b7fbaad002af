// The fused policy-objective passes: named RLCORE_HD function objects over bound token views, run
// by the execution context's primitives (the CUDA backend instantiates the same templates).
//
//   row pre-pass (ctx.reduce_rows, only when needed): per row the valid count n_i, the sums of
//       the clamped log-ratios, advantages, GMPO clipped log-ratios, rollout log-ratios and of
//       the token weights (importance weight * entropy keep) of the row;
//   token pass (ctx.reduce_tokens): per token slot, the loss terms times the aggregation weight,
//       d loss / d lp and d loss / d entropy written once, and the metric sums returned.
#pragma once

#include "../../config.hpp"
#include "../../math/kl.hpp"
#include "../../math/surrogate.hpp"
#include "../aggregate.hpp"
#include "../metrics.hpp"
#include "../policy_options.hpp"
#include "token_args.hpp"

#include <cstdint>
#include <type_traits>
#include <utility>

// Marks a loop whose iterations are independent (GCC: lets it vectorise without alias checks).
#if defined(__GNUC__) && !defined(__clang__)
#define RLCORE_DETAIL_POLICY_INDEPENDENT_ITERATIONS _Pragma("GCC ivdep")
#else
#define RLCORE_DETAIL_POLICY_INDEPENDENT_ITERATIONS
#endif

namespace rlcore::detail {

struct policy_row_stats;

/// Option values in the compute type T, copied into the functors (device-copyable).
template <class T>
struct policy_params {
  policy_loss loss;
  gspo_level gspo;
  T eps_low, eps_high, dual_clip, delta_clip;
  T gspo_eps_low, gspo_eps_high, gmpo_eps_low, gmpo_eps_high;
  T sapo_tau_pos, sapo_tau_neg;
  T clamp;
  kl_estimator kl;
  T kl_beta;
  bool kl_output_clamp;
  T kl_output_min, kl_output_max;
  T entropy_coef;
  bool entropy_mask;
  T entropy_threshold;
  importance_level is_level;
  importance_mode is_mode;
  T is_cap, is_low, is_high;
  aggregation_weights weights;
  bool row_stats_needed;
  bool row_counts_only; ///< the pre-pass only needs n_i (no sequence form, no sequence IS)
  /// Host chunked token pass only: the row stats whose n_i the token pass counts itself, row by
  /// row before the row's chunks (host_row_prepare), instead of a count-only pre-pass; else null.
  policy_row_stats* host_row_counts;

  [[nodiscard]] RLCORE_HD bool sequence_form() const {
    return loss == policy_loss::gmpo || (loss == policy_loss::gspo && gspo == gspo_level::sequence);
  }
  [[nodiscard]] RLCORE_HD math::bounded_weight<T> importance_weight(T log_w) const {
    const T clamped = math::clamp_log_ratio(log_w, clamp).value;
    if (is_mode == importance_mode::truncate) {
      return math::truncated_importance_weight(clamped, is_cap);
    }
    return math::masked_importance_weight(clamped, is_low, is_high);
  }
};

/// The importance weight of a log-ratio log_w (clamped to [-clamp, clamp] first) with every mode's
/// result computed and `mode`'s selected: as policy_params::importance_weight, from math's parts
/// (not its bounded_weight structs, which GCC keeps in memory: a loop would not vectorise).
template <class T>
RLCORE_DETAIL_FORCE_INLINE void importance_weight_parts(T clamp, T cap, T low, T high,
                                                        importance_mode mode, T log_w, T& weight,
                                                        bool& corrected) {
  const T w = math::importance_weight_of_log_ratio(math::clamp_log_ratio(log_w, clamp).value);
  const bool truncate = mode == importance_mode::truncate;
  weight =
      math::select(truncate, math::truncated_weight(w, cap), math::masked_weight(w, low, high));
  const bool truncated = math::weight_truncated(w, cap);
  const bool masked = math::weight_masked(w, low, high);
  corrected = (truncate & truncated) | (!truncate & masked); // no branches: vectorises
}

/// Per-row sums of the pre-pass.
struct policy_row_stats {
  double valid = 0;
  double sum_log_ratio = 0; ///< sum of clamped lp - old
  double sum_advantage = 0;
  double sum_gmpo_log_ratio = 0;    ///< sum of GMPO's sign(A)-clipped log-ratios
  double sum_rollout_log_ratio = 0; ///< sum of old - rollout
  double sum_kept_weight = 0;       ///< sum of token importance weight * entropy keep

  RLCORE_HD constexpr policy_row_stats& operator+=(const policy_row_stats& o) {
    valid += o.valid;
    sum_log_ratio += o.sum_log_ratio;
    sum_advantage += o.sum_advantage;
    sum_gmpo_log_ratio += o.sum_gmpo_log_ratio;
    sum_rollout_log_ratio += o.sum_rollout_log_ratio;
    sum_kept_weight += o.sum_kept_weight;
    return *this;
  }
};

/// The bound views of one call (absent_token_view for inputs not given).
template <class LP, class Old, class Adv, class Ref, class Ent, class Roll>
struct policy_views {
  LP log_probs;
  Old old_log_probs;
  Adv advantages;
  Ref ref_log_probs;
  Ent entropy;
  Roll rollout_log_probs;
};

template <class T, class Views>
RLCORE_HD T token_importance_log_ratio(const Views& v, index_t i, index_t t) {
  if constexpr (is_present<decltype(v.rollout_log_probs)>) {
    return T(v.old_log_probs(i, t)) - T(v.rollout_log_probs(i, t));
  } else {
    return T(0);
  }
}

template <class T, class Views>
RLCORE_HD bool entropy_kept(const Views& v, const policy_params<T>& p, index_t i, index_t t) {
  if constexpr (is_present<decltype(v.entropy)>) {
    return !p.entropy_mask || T(v.entropy(i, t)) >= p.entropy_threshold;
  } else {
    return true;
  }
}

/// Token importance weight (1 unless token-level correction is on).
template <class T, class Views>
RLCORE_HD math::bounded_weight<T> token_importance_weight(const Views& v, const policy_params<T>& p,
                                                          index_t i, index_t t) {
  if (p.is_level == importance_level::token) {
    return p.importance_weight(token_importance_log_ratio<T>(v, i, t));
  }
  return {T(1), false};
}

/// Pointer to element (i, t0) of a bound per-token view when the row is contiguous from there
/// (column / flat stride 1), else null; null for an absent view and for a view type with neither
/// stride (read token by token).
template <class View>
RLCORE_DETAIL_FORCE_INLINE auto* contiguous_row(const View& view, index_t i, index_t t0) {
  if constexpr (is_present<View> && requires { view.flat.stride; }) {
    using pointer = decltype(&view(i, t0));
    return view.flat.stride == 1 ? &view(i, t0) : pointer(nullptr);
  } else if constexpr (is_present<View> && requires { view.col_stride; }) {
    using pointer = decltype(&view(i, t0));
    return view.col_stride == 1 ? &view(i, t0) : pointer(nullptr);
  } else {
    return static_cast<const float*>(nullptr);
  }
}

/// Row pre-pass summand.
template <class T, class Layout, class Views>
struct policy_row_pass {
  Layout layout;
  Views v;
  policy_params<T> p;

  RLCORE_DETAIL_FORCE_INLINE RLCORE_HD policy_row_stats operator()(index_t i, index_t t) const {
    policy_row_stats s;
    if (!layout.valid(i, t)) {
      return s;
    }
    s.valid = 1;
    if (p.row_counts_only) {
      return s;
    }
    const T lp = T(v.log_probs(i, t));
    const T advantage = T(v.advantages(i, t));
    const T delta = math::clamp_log_ratio(lp - T(v.old_log_probs(i, t)), p.clamp).value;
    s.sum_log_ratio = delta;
    s.sum_advantage = advantage;
    if (p.loss == policy_loss::gmpo) {
      s.sum_gmpo_log_ratio =
          math::gmpo_clip_log_ratio(delta, advantage, p.gmpo_eps_low, p.gmpo_eps_high).value;
    }
    s.sum_rollout_log_ratio = token_importance_log_ratio<T>(v, i, t);
    const T kept = entropy_kept(v, p, i, t) ? T(1) : T(0);
    s.sum_kept_weight = double(token_importance_weight(v, p, i, t).value * kept);
    return s;
  }

  // Host whole-row form (execution_context<host_space>::reduce_rows): when only n_i is needed, a
  // count over the row's mask; else, for a row whose views are all contiguous along it, the
  // per-token terms of host_row_chunk_width slots at a time in a loop the compiler vectorises
  // (masked slots selected to 0), then added in token order, in double, as operator()'s sums are
  // (the same bits: a masked token adds 0 there, and 0 leaves a sum that is never -0 unchanged);
  // other rows token by token through operator().
  static constexpr bool has_entropy = is_present<decltype(std::declval<Views>().entropy)>;
  static constexpr bool has_rollout = is_present<decltype(std::declval<Views>().rollout_log_probs)>;
  static constexpr index_t host_row_chunk_width = 32;

  [[nodiscard]] bool host_row_sum_enabled() const { return true; }
  [[nodiscard]] policy_row_stats host_row_sum(index_t i) const {
    policy_row_stats s;
    if (p.row_counts_only) {
      s.valid = static_cast<double>(host_row_valid_count(layout, i));
      return s;
    }
    const index_t len = layout.row_length(i);
    if (len == 0) {
      return s; // no element (i, 0) to point at: a view with no columns has no data
    }
    const auto* valid = contiguous_mask_row(layout, i, 0);
    const auto* lp = contiguous_row(v.log_probs, i, 0);
    const auto* old = contiguous_row(v.old_log_probs, i, 0);
    const auto* advantage = contiguous_row(v.advantages, i, 0);
    const auto* entropy = contiguous_row(v.entropy, i, 0);
    const auto* rollout = contiguous_row(v.rollout_log_probs, i, 0);
    if (lp == nullptr || old == nullptr || advantage == nullptr
        || (has_entropy && entropy == nullptr) || (has_rollout && rollout == nullptr)
        || (valid == nullptr && layout_has_mask(layout))) {
      for (index_t t = 0; t < len; ++t) {
        s += (*this)(i, t);
      }
      return s;
    }
    const bool token_level = has_rollout && p.is_level == importance_level::token;
    if (valid != nullptr) {
      if (token_level) {
        host_row_chunks<true, true>(s, len, valid, lp, old, advantage, entropy, rollout);
      } else {
        host_row_chunks<true, false>(s, len, valid, lp, old, advantage, entropy, rollout);
      }
    } else {
      if (token_level) {
        host_row_chunks<false, true>(s, len, valid, lp, old, advantage, entropy, rollout);
      } else {
        host_row_chunks<false, false>(s, len, valid, lp, old, advantage, entropy, rollout);
      }
    }
    return s;
  }

  /// host_row_sum's loop over a contiguous row of len slots: HasValid (a mask row is read),
  /// TokenLevel (token-level importance weights are computed) fixed for the loop.
  template <bool HasValid, bool TokenLevel, class Valid, class LP, class Old, class Adv, class Ent,
            class Roll>
  RLCORE_DETAIL_FORCE_INLINE void host_row_chunks(policy_row_stats& s, index_t len,
                                                  const Valid* valid, const LP* lp, const Old* old,
                                                  const Adv* advantage, const Ent* entropy,
                                                  const Roll* rollout) const {
    constexpr index_t width = host_row_chunk_width;
    const bool gmpo = p.loss == policy_loss::gmpo;
    for (index_t t0 = 0; t0 < len; t0 += width) {
      const index_t n = len - t0 < width ? len - t0 : width;
      T valid_k[width], delta_k[width], advantage_k[width], gmpo_k[width], rollout_k[width],
          kept_weight_k[width];
      if constexpr (HasValid) {
        for (index_t k = 0; k < n; ++k) {
          valid_k[k] = math::select(valid[t0 + k] != Valid(0), T(1), T(0));
        }
      } else {
        for (index_t k = 0; k < n; ++k) {
          valid_k[k] = T(1);
        }
      }
      RLCORE_DETAIL_POLICY_INDEPENDENT_ITERATIONS
      for (index_t k = 0; k < n; ++k) {
        const index_t t = t0 + k;
        const bool slot_valid = valid_k[k] != T(0);
        // a masked slot's inputs (anything, inf or NaN) replaced by 0 and its terms by 0
        const T lp_t = math::select(slot_valid, T(lp[t]), T(0));
        const T old_t = math::select(slot_valid, T(old[t]), T(0));
        const T advantage_t = math::select(slot_valid, T(advantage[t]), T(0));
        const T delta = math::clamp_log_ratio(lp_t - old_t, p.clamp).value;
        delta_k[k] = delta;
        advantage_k[k] = advantage_t;
        gmpo_k[k] = math::select(
            gmpo, math::gmpo_clipped_log_ratio(delta, advantage_t, p.gmpo_eps_low, p.gmpo_eps_high),
            T(0));
        T log_w = T(0);
        if constexpr (has_rollout) {
          log_w = old_t - math::select(slot_valid, T(rollout[t]), T(0));
        }
        rollout_k[k] = log_w;
        T weight = T(1);
        if constexpr (TokenLevel) {
          bool corrected = false;
          importance_weight_parts(p.clamp, p.is_cap, p.is_low, p.is_high, p.is_mode, log_w, weight,
                                  corrected);
        }
        bool kept = true;
        if constexpr (has_entropy) {
          kept = !p.entropy_mask
                 | (math::select(slot_valid, T(entropy[t]), T(0)) >= p.entropy_threshold);
        }
        kept_weight_k[k] = math::select(slot_valid & kept, weight, T(0));
      }
      for (index_t k = 0; k < n; ++k) {
        s.valid += double(valid_k[k]);
        s.sum_log_ratio += double(delta_k[k]);
        s.sum_advantage += double(advantage_k[k]);
        s.sum_gmpo_log_ratio += double(gmpo_k[k]);
        s.sum_rollout_log_ratio += double(rollout_k[k]);
        s.sum_kept_weight += double(kept_weight_k[k]);
      }
    }
  }
};

/// Cache hint (prefetch) for the Count elements from p + t on: no access, never a fault, so the
/// address may lie past the end of the row.
template <index_t Count, class E>
RLCORE_DETAIL_FORCE_INLINE void prefetch_elements(E* p, index_t t) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr auto line = std::uintptr_t(64);
  constexpr auto bytes = std::uintptr_t(Count) * sizeof(E);
  const auto address = reinterpret_cast<std::uintptr_t>(p) + std::uintptr_t(t) * sizeof(E);
  for (std::uintptr_t offset = 0; offset < bytes; offset += line) {
    // An integer address: it may lie past the row's end, where pointer arithmetic is undefined.
    __builtin_prefetch(
        reinterpret_cast<const void*>(address + offset)); // NOLINT(performance-no-int-to-ptr)
  }
#else
  static_cast<void>(p);
  static_cast<void>(t);
#endif
}

/// The pointer type contiguous_row returns for a view type.
template <class View>
using contiguous_row_pointer =
    decltype(contiguous_row(std::declval<const View&>(), index_t{0}, index_t{0}));

/// The per-row values of the host chunked token pass, computed once per row (host_row_terms) from
/// the options and the pre-pass's row stats, in T with the token-by-token path's operations.
template <class T>
struct policy_host_row_terms {
  T weight = T(0);            ///< the row's aggregation weight w_i
  T importance_weight = T(1); ///< the sequence-level importance weight iw_i (1 at other levels)
  bool importance_corrected = false; ///< whether iw_i was truncated or masked
  T gspo_ratio = T(1);               ///< GSPO-token: s_i = exp(mean clamped log-ratio of the row)
  /// GSPO sequence level / GMPO: the row's loss l_i (every valid token's policy value)
  T sequence_value = T(0);
  /// GSPO sequence level / GMPO: w_i * (sum of the row's kept weights) * iw_i * d l_i / d mean;
  /// a token's gradient is this times its gates over n_i
  T sequence_gradient = T(0);
  T valid = T(1);                    ///< n_i as T (sequence forms; 1 otherwise)
  bool sequence_clipped_low = false; ///< GSPO sequence level: the row's clip flags
  bool sequence_clipped_high = false;
};

/// The local arrays of one host chunk of the token pass whose slots are read token by token (the
/// last, partial chunk of a row; a row that is not contiguous): inputs gathered in T, outputs to
/// scatter.
template <class T>
struct policy_token_chunk {
  static constexpr index_t width = 32;
  /// Chunks of a row per piece of the T-precision metric sums (see policy_token_lanes).
  static constexpr index_t pieces = 32;
  T valid[width];                                                        ///< 1 or 0
  T lp[width], old[width], advantage[width], ref[width], entropy[width]; ///< gathered inputs
  T rollout[width]; ///< gathered rollout log-probs (token-level importance correction only)
  T grad[width], grad_entropy[width]; ///< outputs to scatter
  policy_host_row_terms<T> row{};     ///< the terms of the chunk's row
};

/// The option values the host chunked body reads, held by value next to the row's pointers (so
/// that they stay in registers: the gradient stores through pointers could alias the functor).
/// eps_low / eps_high / dual_clip / delta_clip are GSPO's clip range (and 0, 0) for GSPO.
template <class T>
struct policy_host_constants {
  T clamp, eps_low, eps_high, dual_clip, delta_clip;
  T kl_beta, kl_output_min, kl_output_max;
  T entropy_coef, entropy_threshold;
  T sapo_tau_pos, sapo_tau_neg;
  T gmpo_eps_low, gmpo_eps_high;
  T is_cap, is_low, is_high;
  policy_loss loss;
  kl_estimator kl;
  importance_level is_level;
  importance_mode is_mode;
  bool kl_output_clamp, entropy_mask;
};

/// One slot's inputs as read (converted to T; anything for a masked slot, 0 when not given).
template <class T>
struct policy_host_slot_inputs {
  T lp, old, advantage, ref, entropy, rollout;
};

/// A host chunk's slots as pointers: a row read and written in place (pointers at its token 0,
/// element types as the views'; mask null when the layout has none), or a policy_token_chunk's
/// arrays. Slot s of the chunk starting at t0 is element t0 + s.
template <class T, class Valid, class LP, class Old, class Adv, class Ref, class Ent, class Roll,
          class Grad, class GradEntropy>
struct policy_host_slots {
  Valid valid; ///< != 0 for a valid slot
  LP lp;
  Old old;
  Adv advantage;
  Ref ref;
  Ent entropy;
  Roll rollout; ///< read only with token-level importance correction (else any readable row)
  Grad grad;
  GradEntropy grad_entropy;
  policy_host_row_terms<T> row; ///< the row's weight and per-row terms
  policy_host_constants<T> constants;
};

/// The host chunked path's metric sums: one lane per chunk slot (summed in slot order at the
/// end). Per token, the unweighted terms go to `piece` sums in T over a piece of a row (at most
/// policy_token_chunk::pieces chunks), and the four token counts (valid, clipped low, clipped high,
/// dual clipped) to one 32-bit word of four 8-bit fields (piece_count_unit); host_flush adds each
/// piece, the loss terms times the row's weight, to the double lanes and the counts to 32-bit
/// lanes (the path is only taken when a lane cannot overflow). The entropy, KL and importance
/// weight lanes exist only when those inputs (entropy, ref, rollout log-probs) are given.
template <class T, index_t W, bool HasRef, bool HasEntropy, bool HasRollout>
struct policy_token_lanes {
  T piece_policy[W], piece_neg_delta[W], piece_advantage[W], piece_advantage_sq[W];
  T piece_kl[HasRef ? W : 1], piece_entropy[HasEntropy ? W : 1];
  T piece_importance_weight[HasRollout ? W : 1];
  std::uint32_t piece_counts[W]; ///< per field (8 bits): tokens of the piece counted
  double policy_loss[W];
  double neg_delta[W], advantage[W], advantage_sq[W];
  double kl_value[HasRef ? W : 1], kl_loss[HasRef ? W : 1];
  double entropy[HasEntropy ? W : 1], entropy_loss[HasEntropy ? W : 1];
  std::int32_t valid[W];
  std::int32_t clipped_low[W], clipped_high[W], dual_clipped[W];
  std::int32_t entropy_kept[HasEntropy ? W : 1];
  double importance_weight[HasRollout ? W : 1];
  std::int32_t importance_corrected[HasRollout ? W : 1];
};

/// Token pass: loss terms, gradients and metric sums of one token slot.
template <class T, class Layout, class Views, class Grad, class GradEntropy>
struct policy_token_pass {
  Layout layout;
  Views v;
  Grad grad_log_probs;
  GradEntropy grad_entropy;
  policy_params<T> p;
  const policy_row_stats* rows; ///< null when the pre-pass did not run

  RLCORE_HD void write_zero(index_t i, index_t t) const {
    grad_log_probs(i, t) = T(0);
    if constexpr (is_present<GradEntropy>) {
      grad_entropy(i, t) = T(0);
    }
  }

  RLCORE_DETAIL_FORCE_INLINE RLCORE_HD policy_token_sums operator()(index_t i, index_t t) const {
    policy_token_sums s;
    if (!layout.valid(i, t)) {
      write_zero(i, t); // select, never multiply: masked inputs may be inf or NaN
      return s;
    }
    const T lp = T(v.log_probs(i, t));
    const T old = T(v.old_log_probs(i, t));
    const T advantage = T(v.advantages(i, t));
    const T raw_delta = lp - old;
    const math::clamped_value<T> delta = math::clamp_log_ratio(raw_delta, p.clamp);
    const double row_valid = rows != nullptr ? rows[i].valid : 0.0;
    const T weight = T(p.weights.row_weight(row_valid));

    // importance-sampling weight (a constant) and entropy keep of this token
    math::bounded_weight<T> is_weight{T(1), false};
    if (p.is_level == importance_level::token) {
      is_weight = token_importance_weight(v, p, i, t);
    } else if (p.is_level == importance_level::sequence) {
      is_weight = p.importance_weight(T(rows[i].sum_rollout_log_ratio));
    }
    const bool kept = entropy_kept(v, p, i, t);
    const T token_factor = kept ? is_weight.value : T(0);

    // policy-loss term
    T policy_value = T(0);
    T policy_gradient = T(0); // d (weighted policy loss) / d lp, weights included
    math::surrogate_term<T> term{T(0), T(0), false, false, false};
    switch (p.loss) {
    case policy_loss::clipped:
      term = math::clipped_surrogate_of_ratio(math::exp_vectorizable(delta.value), advantage,
                                              p.eps_low, p.eps_high, p.dual_clip, p.delta_clip);
      policy_value = term.value;
      policy_gradient = weight * token_factor * term.gradient * delta.gate;
      break;
    case policy_loss::sapo:
      term = math::sapo_surrogate(delta.value, advantage, p.sapo_tau_pos, p.sapo_tau_neg);
      policy_value = term.value;
      policy_gradient = weight * token_factor * term.gradient * delta.gate;
      break;
    case policy_loss::cispo:
      term = math::cispo_surrogate(delta.value, lp, advantage, p.eps_high);
      policy_value = term.value;
      policy_gradient = weight * token_factor * term.gradient; // ratio is a constant: no gate
      break;
    case policy_loss::reinforce:
      term = math::reinforce_surrogate(lp, advantage);
      policy_value = term.value;
      policy_gradient = weight * token_factor * term.gradient;
      break;
    case policy_loss::gspo: {
      const policy_row_stats& row = rows[i];
      const T mean_log_ratio = T(row.sum_log_ratio / row.valid); // within [-clamp, clamp]
      if (p.gspo == gspo_level::token) {
        term = math::clipped_surrogate(mean_log_ratio, advantage, p.gspo_eps_low, p.gspo_eps_high,
                                       T(0), T(0));
        policy_value = term.value;
        policy_gradient = weight * token_factor * term.gradient * delta.gate;
      } else {
        const T row_advantage = T(row.sum_advantage / row.valid);
        term = math::clipped_surrogate(mean_log_ratio, row_advantage, p.gspo_eps_low,
                                       p.gspo_eps_high, T(0), T(0));
        policy_value = term.value;
        policy_gradient = weight * T(row.sum_kept_weight) * is_sequence_weight(i) * term.gradient
                          * delta.gate / T(row.valid);
      }
      break;
    }
    case policy_loss::gmpo: {
      const policy_row_stats& row = rows[i];
      const T row_advantage = T(row.sum_advantage / row.valid);
      const T ratio = math::exp(T(row.sum_gmpo_log_ratio / row.valid)); // mean within [-c, c]
      const math::gmpo_log_ratio<T> m =
          math::gmpo_clip_log_ratio(delta.value, advantage, p.gmpo_eps_low, p.gmpo_eps_high);
      term = {-row_advantage * ratio, T(0), m.clipped_low, m.clipped_high, false};
      policy_value = term.value;
      policy_gradient = weight * T(row.sum_kept_weight) * is_sequence_weight(i)
                        * (-row_advantage * ratio) * m.gate * delta.gate / T(row.valid);
      break;
    }
    }
    s.policy_loss = double(weight) * double(token_factor) * double(policy_value);
    T gradient = policy_gradient;

    // KL penalty
    if constexpr (is_present<decltype(v.ref_log_probs)>) {
      T ratio = T(1);
      if (p.kl == kl_estimator::k3_importance) {
        ratio = math::exp_vectorizable(delta.value);
      }
      const math::value_and_gradient<T> kl =
          kl_term(p.kl, p.kl_output_clamp, lp - T(v.ref_log_probs(i, t)), ratio, delta.gate);
      s.kl_value = kl.value;
      s.kl_loss = double(weight) * double(p.kl_beta) * double(kl.value);
      gradient += weight * p.kl_beta * kl.gradient;
    }
    grad_log_probs(i, t) = gradient;

    // entropy bonus
    if constexpr (is_present<decltype(v.entropy)>) {
      const T entropy = T(v.entropy(i, t));
      s.entropy = entropy;
      s.entropy_loss = -double(weight) * double(p.entropy_coef) * double(entropy);
      if constexpr (is_present<GradEntropy>) {
        grad_entropy(i, t) = -weight * p.entropy_coef;
      }
    }

    s.valid = 1;
    s.clipped_low = term.clipped_low ? 1 : 0;
    s.clipped_high = term.clipped_high ? 1 : 0;
    s.dual_clipped = term.dual_clipped ? 1 : 0;
    s.neg_delta = -double(raw_delta);
    s.advantage = advantage;
    s.advantage_sq = double(advantage) * double(advantage);
    s.importance_weight = is_weight.value;
    s.importance_corrected = is_weight.corrected ? 1 : 0;
    s.entropy_kept = kept ? 1 : 0;
    return s;
  }

  /// The KL estimate of one token with the call's options; see the static overload.
  RLCORE_DETAIL_FORCE_INLINE RLCORE_HD math::value_and_gradient<T>
  kl_term(kl_estimator estimator, bool output_clamp, T lp_minus_ref, T ratio, T ratio_gate) const {
    return kl_term(estimator, output_clamp, p.kl_output_min, p.kl_output_max, p.clamp, lp_minus_ref,
                   ratio, ratio_gate);
  }

  /// The KL estimate of one token, output clamp to [output_min, output_max] applied when
  /// `output_clamp`; log-ratio clamp `clamp`, ratio and gate as math::kl_estimate_of_ratio.
  RLCORE_DETAIL_FORCE_INLINE RLCORE_HD static math::value_and_gradient<T>
  kl_term(kl_estimator estimator, bool output_clamp, T output_min, T output_max, T clamp,
          T lp_minus_ref, T ratio, T ratio_gate) {
    math::value_and_gradient<T> kl =
        math::kl_estimate_of_ratio(estimator, lp_minus_ref, ratio, ratio_gate, clamp);
    math::value_and_gradient<T> clamped = math::clamp_kl_output(kl, output_min, output_max);
    return {math::select(output_clamp, clamped.value, kl.value),
            math::select(output_clamp, clamped.gradient, kl.gradient)};
  }

  // Host chunked path (execution_context<host_space>::reduce_tokens): every loss form and
  // importance level, W token slots of a row at a time. A row whose views are all contiguous along
  // it is read and written in place, pointers, option values and per-row terms (host_row_terms:
  // the aggregation weight, GSPO's ratio, the sequence forms' loss and gradient factor, the
  // sequence-level importance weight, from the pre-pass's row stats) resolved once per row
  // (host_row_begin, host_compute_row); other chunks (the last, partial chunk of a row; a row that
  // is not contiguous) go through the local arrays of host_chunk (host_load, host_compute,
  // host_store). Both run the same per-slot body (host_compute_slot: selects, no branches, no
  // calls) in a loop the compiler vectorises; the metric sums go to W lanes (slot k to lane k)
  // summed in a fixed order by host_finish. Same formulas and, for the gradients, the same
  // operations in the same order as operator() (the same bits; the sums differ in order only).
  static constexpr bool has_ref = is_present<decltype(std::declval<Views>().ref_log_probs)>;
  static constexpr bool has_entropy = is_present<decltype(std::declval<Views>().entropy)>;
  static constexpr bool has_rollout = is_present<decltype(std::declval<Views>().rollout_log_probs)>;
  using host_chunk = policy_token_chunk<T>;
  using host_lanes = policy_token_lanes<T, host_chunk::width, has_ref, has_entropy, has_rollout>;
  /// The in-place slots of a contiguous row.
  using host_row = policy_host_slots<
      T, decltype(contiguous_mask_row(std::declval<const Layout&>(), index_t{0}, index_t{0})),
      contiguous_row_pointer<decltype(Views::log_probs)>,
      contiguous_row_pointer<decltype(Views::old_log_probs)>,
      contiguous_row_pointer<decltype(Views::advantages)>,
      contiguous_row_pointer<decltype(Views::ref_log_probs)>,
      contiguous_row_pointer<decltype(Views::entropy)>,
      contiguous_row_pointer<decltype(Views::rollout_log_probs)>, contiguous_row_pointer<Grad>,
      contiguous_row_pointer<GradEntropy>>;

  /// Kernel variants of the chunked form: 0 general (clipped surrogate, CISPO, REINFORCE or
  /// GSPO-token, any KL estimator); 1 the GRPO / PPO defaults (clipped surrogate, KL estimator k3
  /// without output clamp, no dual clip, no delta clip, no importance correction) with those
  /// options as constants, so that the selects on them fold away; 2 SAPO (any KL estimator); 3 the
  /// sequence forms (GSPO sequence level, GMPO). Every variant but 1 takes any importance level.
  static constexpr int host_variants = 4;
  /// The variant with FMA-contracted kernels (host_context::contract_fma): the GRPO / PPO defaults.
  static constexpr int host_fma_variant = 1;
  [[nodiscard]] int host_variant() const {
    if (p.sequence_form()) {
      return 3;
    }
    if (p.loss == policy_loss::sapo) {
      return 2;
    }
    const bool grpo_defaults = p.loss == policy_loss::clipped && p.dual_clip == T(0)
                               && p.delta_clip == T(0) && p.is_level == importance_level::none
                               && (!has_ref || (p.kl == kl_estimator::k3 && !p.kl_output_clamp));
    return grpo_defaults ? 1 : 0;
  }

  [[nodiscard]] bool host_chunk_enabled() const {
    // a 32-bit count lane sees at most token_slots / width + 1 tokens
    constexpr index_t max_slots = index_t(2147483647) * (host_chunk::width - 1);
    return layout.token_slots() <= max_slots;
  }

  [[nodiscard]] policy_host_constants<T> host_constants() const {
    const bool gspo = p.loss == policy_loss::gspo;
    return {p.clamp,
            gspo ? p.gspo_eps_low : p.eps_low,
            gspo ? p.gspo_eps_high : p.eps_high,
            gspo ? T(0) : p.dual_clip,
            gspo ? T(0) : p.delta_clip,
            p.kl_beta,
            p.kl_output_min,
            p.kl_output_max,
            p.entropy_coef,
            p.entropy_threshold,
            p.sapo_tau_pos,
            p.sapo_tau_neg,
            p.gmpo_eps_low,
            p.gmpo_eps_high,
            p.is_cap,
            p.is_low,
            p.is_high,
            p.loss,
            p.kl,
            p.is_level,
            p.is_mode,
            p.kl_output_clamp,
            p.entropy_mask};
  }

  /// Called by the chunked loop at the start of row i, before any of its chunks: with
  /// p.host_row_counts, the row's valid count n_i (the pre-pass's count: host_row_valid_count)
  /// into p.host_row_counts[i], read while the row's mask is about to be read anyway.
  RLCORE_DETAIL_FORCE_INLINE void host_row_prepare(index_t i) const {
    if (p.host_row_counts != nullptr) {
      p.host_row_counts[i].valid = static_cast<double>(host_row_valid_count(layout, i));
    }
  }

  [[nodiscard]] T host_row_weight(index_t i) const {
    return T(p.weights.row_weight(rows != nullptr ? rows[i].valid : 0.0));
  }

  /// The per-row terms of row i (see policy_host_row_terms), each computed as operator() computes
  /// it for a token of the row.
  [[nodiscard]] policy_host_row_terms<T> host_row_terms(index_t i) const {
    policy_host_row_terms<T> r;
    const T weight = host_row_weight(i);
    r.weight = weight;
    if (p.is_level == importance_level::sequence) {
      const math::bounded_weight<T> w = p.importance_weight(T(rows[i].sum_rollout_log_ratio));
      r.importance_weight = w.value;
      r.importance_corrected = w.corrected;
    }
    if ((p.loss != policy_loss::gspo && p.loss != policy_loss::gmpo) || !(rows[i].valid > 0)) {
      return r; // no row term, or no valid token in the row to use one
    }
    const policy_row_stats& row = rows[i];
    const T mean_log_ratio = T(row.sum_log_ratio / row.valid);
    const T row_advantage = T(row.sum_advantage / row.valid);
    r.valid = T(row.valid);
    if (p.loss == policy_loss::gspo && p.gspo == gspo_level::token) {
      r.gspo_ratio = math::exp_vectorizable(mean_log_ratio);
    } else if (p.loss == policy_loss::gspo) {
      const math::surrogate_term<T> term = math::clipped_surrogate(
          mean_log_ratio, row_advantage, p.gspo_eps_low, p.gspo_eps_high, T(0), T(0));
      r.sequence_value = term.value;
      r.sequence_gradient = weight * T(row.sum_kept_weight) * is_sequence_weight(i) * term.gradient;
      r.sequence_clipped_low = term.clipped_low;
      r.sequence_clipped_high = term.clipped_high;
    } else {
      const T ratio = math::exp(T(row.sum_gmpo_log_ratio / row.valid));
      r.sequence_value = -row_advantage * ratio;
      r.sequence_gradient =
          weight * T(row.sum_kept_weight) * is_sequence_weight(i) * (-row_advantage * ratio);
    }
    return r;
  }

  /// Whether every view of row i (mask included) is contiguous along the row; if so, r holds the
  /// row's pointers, per-row terms and the option values for host_compute_row.
  [[nodiscard]] bool host_row_begin(host_row& r, index_t i) const {
    r.valid = contiguous_mask_row(layout, i, 0);
    r.lp = contiguous_row(v.log_probs, i, 0);
    r.old = contiguous_row(v.old_log_probs, i, 0);
    r.advantage = contiguous_row(v.advantages, i, 0);
    r.ref = contiguous_row(v.ref_log_probs, i, 0);
    r.entropy = contiguous_row(v.entropy, i, 0);
    r.rollout = contiguous_row(v.rollout_log_probs, i, 0);
    r.grad = contiguous_row(grad_log_probs, i, 0);
    r.grad_entropy = contiguous_row(grad_entropy, i, 0);
    r.row = host_row_terms(i);
    r.constants = host_constants();
    if constexpr (has_rollout && std::is_convertible_v<decltype(r.old), decltype(r.rollout)>) {
      if (p.is_level != importance_level::token && r.old != nullptr) {
        // its values are not used below token level: read old's row again (in cache) instead
        r.rollout = r.old;
      }
    }
    return r.lp != nullptr && r.old != nullptr && r.advantage != nullptr
           && (!has_ref || r.ref != nullptr) && (!has_entropy || r.entropy != nullptr)
           && (!has_rollout || r.rollout != nullptr)
           && (r.valid != nullptr || !layout_has_mask(layout)) && r.grad != nullptr
           && (!is_present<GradEntropy> || r.grad_entropy != nullptr);
  }

  /// Slots ahead of the chunk being computed whose inputs and outputs host_compute_row prefetches
  /// (measured on the 2-core CI VM at 1e7 tokens: 256 about 10% faster than none or 512).
  static constexpr index_t host_prefetch_ahead = 256;

  /// The chunk of row r's slots t0 .. t0 + width - 1, in place (Variant as host_variant()).
  template <int Variant>
  RLCORE_DETAIL_FORCE_INLINE void host_compute_row(const host_row& r, index_t t0,
                                                   host_lanes& l) const {
    // the streams' chunk host_prefetch_ahead slots ahead (the hardware prefetchers stop at page
    // boundaries: a row of T = 1000 floats crosses one every 1024 slots)
    const index_t ahead = t0 + host_prefetch_ahead;
    constexpr index_t width = host_chunk::width;
    prefetch_elements<width>(r.lp, ahead);
    prefetch_elements<width>(r.old, ahead);
    prefetch_elements<width>(r.advantage, ahead);
    if constexpr (has_ref) {
      prefetch_elements<width>(r.ref, ahead);
    }
    if constexpr (has_entropy) {
      prefetch_elements<width>(r.entropy, ahead);
    }
    if constexpr (has_rollout) {
      prefetch_elements<width>(r.rollout, ahead);
    }
    prefetch_elements<width>(r.grad, ahead);
    if constexpr (is_present<GradEntropy>) {
      prefetch_elements<width>(r.grad_entropy, ahead);
    }
    if (r.valid != nullptr) {
      prefetch_elements<width>(r.valid, ahead);
      host_compute_slots<Variant, true>(r, t0, l);
    } else {
      host_compute_slots<Variant, false>(r, t0, l);
    }
  }

  RLCORE_DETAIL_FORCE_INLINE void host_load(host_chunk& c, index_t k, index_t i, index_t t) const {
    if (k == 0) {
      c.row = host_row_terms(i); // every chunk's slot 0 is loaded; slots 1.. are of the same row
    }
    c.valid[k] = layout.valid(i, t) ? T(1) : T(0);
    c.lp[k] = T(v.log_probs(i, t));
    c.old[k] = T(v.old_log_probs(i, t));
    c.advantage[k] = T(v.advantages(i, t));
    if constexpr (has_ref) {
      c.ref[k] = T(v.ref_log_probs(i, t));
    }
    if constexpr (has_entropy) {
      c.entropy[k] = T(v.entropy(i, t));
    }
    if constexpr (has_rollout) {
      c.rollout[k] = p.is_level == importance_level::token ? T(v.rollout_log_probs(i, t)) : T(0);
    }
  }

  RLCORE_DETAIL_FORCE_INLINE void host_load_padding(host_chunk& c, index_t k) const {
    c.valid[k] = T(0);
    c.lp[k] = c.old[k] = c.advantage[k] = c.ref[k] = c.entropy[k] = c.rollout[k] = T(0);
  }

  /// The per-slot body over the local arrays of chunk c (Variant as host_variant()).
  template <int Variant>
  RLCORE_DETAIL_FORCE_INLINE void host_compute(host_chunk& c, host_lanes& l) const {
    const policy_host_slots<T, const T*, const T*, const T*, const T*, const T*, const T*, const T*,
                            T*, T*>
        slots{c.valid,   c.lp,   c.old,          c.advantage, c.ref,           c.entropy,
              c.rollout, c.grad, c.grad_entropy, c.row,       host_constants()};
    host_compute_slots<Variant, true>(slots, 0, l);
  }

  /// The per-slot body over slots t0 .. t0 + width - 1 of `slots`: a loop the compiler
  /// vectorises (inputs converted to T, outputs to the element types of the pointers).
  template <int Variant, bool HasValid, class Slots>
  RLCORE_DETAIL_FORCE_INLINE void host_compute_slots(const Slots& slots, index_t t0,
                                                     host_lanes& l) const {
    const policy_host_constants<T> constants = slots.constants;
    const policy_host_row_terms<T> row = slots.row;
    const auto* valid = slots.valid;
    const auto* lp = slots.lp + t0;
    const auto* old = slots.old + t0;
    const auto* advantage = slots.advantage + t0;
    const auto* ref = slots.ref;
    const auto* entropy = slots.entropy;
    const auto* rollout = slots.rollout;
    auto* grad = slots.grad + t0;
    auto* grad_h = slots.grad_entropy;
    // the valid flags as T (GCC does not vectorise the body with a narrower mask type in it)
    T valid_copy[host_chunk::width];
    const T* valid_t = valid_copy;
    if constexpr (HasValid) {
      using valid_type = std::remove_cvref_t<decltype(*valid)>;
      if constexpr (std::is_same_v<valid_type, T>) {
        valid_t = valid + t0;
      } else {
        for (index_t k = 0; k < host_chunk::width; ++k) {
          valid_copy[k] = valid[t0 + k] != valid_type(0) ? T(1) : T(0);
        }
      }
    }
    if constexpr (has_ref) {
      ref += t0;
    }
    if constexpr (has_entropy) {
      entropy += t0;
    }
    if constexpr (has_rollout) {
      rollout += t0;
    }
    if constexpr (is_present<GradEntropy>) {
      grad_h += t0;
    }
    RLCORE_DETAIL_POLICY_INDEPENDENT_ITERATIONS
    for (index_t k = 0; k < host_chunk::width; ++k) {
      bool slot_valid = true;
      if constexpr (HasValid) {
        slot_valid = valid_t[k] != T(0);
      }
      policy_host_slot_inputs<T> in{T(lp[k]), T(old[k]), T(advantage[k]), T(0), T(0), T(0)};
      if constexpr (has_ref) {
        in.ref = T(ref[k]);
      }
      if constexpr (has_entropy) {
        in.entropy = T(entropy[k]);
      }
      if constexpr (has_rollout) {
        in.rollout = T(rollout[k]);
      }
      T grad_k;
      T grad_entropy_k;
      host_compute_slot<Variant>(constants, row, slot_valid, in, grad_k, grad_entropy_k, l, k);
      grad[k] = std::remove_cvref_t<decltype(*grad)>(grad_k);
      if constexpr (is_present<GradEntropy>) {
        grad_h[k] = std::remove_cvref_t<decltype(*grad_h)>(grad_entropy_k);
      }
    }
  }

  /// The token importance weight of a slot from its log-ratio old - rollout, the call's mode
  /// selected (as policy_params::importance_weight; math's parts, not its bounded_weight structs,
  /// which GCC keeps in memory: the loop would not vectorise), into `weight` and `corrected`.
  RLCORE_DETAIL_FORCE_INLINE static void
  host_importance_weight(const policy_host_constants<T>& constants, T log_w, T& weight,
                         bool& corrected) {
    importance_weight_parts(constants.clamp, constants.is_cap, constants.is_low, constants.is_high,
                            constants.is_mode, log_w, weight, corrected);
  }

  /// The per-slot body: slot k's inputs (anything when masked), its outputs and lanes.
  template <int Variant>
  RLCORE_DETAIL_FORCE_INLINE void
  host_compute_slot(const policy_host_constants<T>& constants, const policy_host_row_terms<T>& row,
                    bool valid, const policy_host_slot_inputs<T>& in, T& grad_out,
                    T& grad_entropy_out, host_lanes& l, index_t k) const {
    using math::select;
    constexpr bool grpo_defaults = Variant == 1;
    constexpr bool sequence_form = Variant == 3;
    const T weight = row.weight;
    const T dual_clip = grpo_defaults ? T(0) : constants.dual_clip;
    const T delta_clip = grpo_defaults ? T(0) : constants.delta_clip;
    const kl_estimator estimator = grpo_defaults ? kl_estimator::k3 : constants.kl;
    const bool kl_output_clamp = grpo_defaults ? false : constants.kl_output_clamp;
    // A masked slot's inputs are replaced by 0 (they may be inf or NaN), so every term below is
    // finite; its outputs and sums are then selected to exactly 0 (never multiplied by a mask).
    const T lp = select(valid, in.lp, T(0));
    const T advantage = select(valid, in.advantage, T(0));
    const T old = select(valid, in.old, T(0));
    const T raw_delta = lp - old; // 0 when masked
    math::clamped_value<T> delta = math::clamp_log_ratio(raw_delta, constants.clamp);
    const T ratio = math::exp_vectorizable_bounded(delta.value); // |delta| <= clamp <= 80
    bool kept = true;
    T entropy = T(0);
    if constexpr (has_entropy) {
      entropy = select(valid, in.entropy, T(0));
      kept = !constants.entropy_mask | (entropy >= constants.entropy_threshold);
    }
    const bool counted = valid & kept;
    // the importance weight (a constant): the token's at token level, else the row's (1 at none)
    T is_weight = row.importance_weight;
    bool is_corrected = row.importance_corrected;
    if constexpr (has_rollout) {
      const T log_w = old - select(valid, in.rollout, T(0));
      T token_weight;
      bool token_corrected;
      host_importance_weight(constants, log_w, token_weight, token_corrected);
      const bool token_level = constants.is_level == importance_level::token;
      is_weight = select(token_level, token_weight, is_weight);
      is_corrected = (token_level & token_corrected) | (!token_level & is_corrected);
    }
    const T token_factor = select(kept, is_weight, T(0));
    bool clipped_low = false;
    bool clipped_high = false;
    bool dual_clipped = false;
    T gradient;
    if constexpr (sequence_form) {
      // GSPO sequence level: l_i for every token, d l_i / d lp = factor * gate / n_i; GMPO: the
      // same with the token's sign(A)-clip gate
      // (gmpo_clip_log_ratio's parts: its struct stays in memory and blocks vectorisation)
      const T m_gate = math::gmpo_clip_gate(delta.value, advantage, constants.gmpo_eps_low,
                                            constants.gmpo_eps_high);
      const bool m_low = math::gmpo_clipped_low(delta.value, advantage, constants.gmpo_eps_low);
      const bool m_high = math::gmpo_clipped_high(delta.value, advantage, constants.gmpo_eps_high);
      const bool gmpo = constants.loss == policy_loss::gmpo;
      gradient = row.sequence_gradient * select(gmpo, m_gate, T(1)) * delta.gate / row.valid;
      l.piece_policy[k] += select(valid, token_factor * row.sequence_value, T(0));
      clipped_low = (gmpo & m_low) | (!gmpo & row.sequence_clipped_low);
      clipped_high = (gmpo & m_high) | (!gmpo & row.sequence_clipped_high);
    } else {
      math::surrogate_term<T> term{};
      if constexpr (Variant == 2) {
        term = math::sapo_surrogate_of_ratio(ratio, advantage, constants.sapo_tau_pos,
                                             constants.sapo_tau_neg);
      } else if constexpr (Variant == 1) {
        term = math::clipped_surrogate_of_ratio(ratio, advantage, constants.eps_low,
                                                constants.eps_high, dual_clip, delta_clip);
      } else {
        // GSPO-token: the clipped surrogate (GSPO's clip range) on the row's ratio s_i
        const T surrogate_ratio =
            select(constants.loss == policy_loss::gspo, row.gspo_ratio, ratio);
        term = math::clipped_surrogate_of_ratio(surrogate_ratio, advantage, constants.eps_low,
                                                constants.eps_high, dual_clip, delta_clip);
      }
      T policy_gate = delta.gate; // d ratio / d lp / ratio where the surrogate's gradient has it
      if constexpr (Variant == 0) {
        // CISPO and REINFORCE: all three forms computed, the call's one selected (a uniform
        // choice; selects, no branch); neither passes its gradient through the clamped ratio
        const bool cispo = constants.loss == policy_loss::cispo;
        const bool reinforce = constants.loss == policy_loss::reinforce;
        term = select_term(
            cispo, math::cispo_surrogate_of_ratio(ratio, lp, advantage, constants.eps_high), term);
        term = select_term(reinforce, math::reinforce_surrogate(lp, advantage), term);
        policy_gate = select(cispo | reinforce, T(1), policy_gate);
      }
      if constexpr (grpo_defaults) {
        gradient = weight * select(counted, term.gradient * policy_gate, T(0));
        l.piece_policy[k] += select(counted, term.value, T(0)); // times the weight in host_flush
      } else {
        // operator()'s order: w * (keep * iw) * dl * gate
        gradient = weight * token_factor * term.gradient * policy_gate;
        l.piece_policy[k] += select(valid, token_factor * term.value, T(0));
      }
      clipped_low = term.clipped_low;
      clipped_high = term.clipped_high;
      dual_clipped = term.dual_clipped;
    }
    if constexpr (has_ref) {
      const T ref = select(valid, in.ref, T(0));
      math::value_and_gradient<T> kl =
          kl_term(estimator, kl_output_clamp, constants.kl_output_min, constants.kl_output_max,
                  constants.clamp, lp - ref, ratio, delta.gate);
      gradient += weight * constants.kl_beta * kl.gradient;
      l.piece_kl[k] += select(valid, kl.value, T(0));
    }
    grad_out = select(valid, gradient, T(0));
    grad_entropy_out = T(0);
    if constexpr (has_entropy) {
      grad_entropy_out = select(valid, -weight * constants.entropy_coef, T(0));
      l.piece_entropy[k] += entropy;
      l.entropy_kept[k] += counted ? 1 : 0;
    }
    if constexpr (has_rollout) {
      l.piece_importance_weight[k] += select(valid, is_weight, T(0));
      l.importance_corrected[k] += (valid & is_corrected) ? 1 : 0;
    }
    l.piece_counts[k] += (valid ? piece_count_unit(0) : 0U)
                         + ((valid & clipped_low) ? piece_count_unit(1) : 0U)
                         + ((valid & clipped_high) ? piece_count_unit(2) : 0U)
                         + ((valid & dual_clipped) ? piece_count_unit(3) : 0U);
    l.piece_neg_delta[k] -= raw_delta;
    l.piece_advantage[k] += advantage;
    l.piece_advantage_sq[k] += advantage * advantage;
  }

  /// c ? a : b field by field.
  RLCORE_DETAIL_FORCE_INLINE static math::surrogate_term<T>
  select_term(bool c, const math::surrogate_term<T>& a, const math::surrogate_term<T>& b) {
    const bool clipped_low = (c & a.clipped_low) | (!c & b.clipped_low);
    const bool clipped_high = (c & a.clipped_high) | (!c & b.clipped_high);
    const bool dual_clipped = (c & a.dual_clipped) | (!c & b.dual_clipped);
    return {math::select(c, a.value, b.value), math::select(c, a.gradient, b.gradient), clipped_low,
            clipped_high, dual_clipped};
  }

  /// One token in field f of a piece count word: fields of 8 bits, each counting at most
  /// host_chunk::pieces tokens per piece.
  static constexpr std::uint32_t piece_count_unit(int field) {
    return std::uint32_t(1) << (8 * field);
  }
  static_assert(host_chunk::pieces <= 255, "a piece count field holds at most 255 tokens");

  /// Adds the piece sums of row i to the lanes (the weighted losses times the row's weight, as
  /// the token pass weighs them) and clears them.
  RLCORE_DETAIL_FORCE_INLINE void host_flush(host_lanes& l, index_t i) const {
    const auto weight = double(host_row_weight(i));
    for (index_t k = 0; k < host_chunk::width; ++k) {
      const std::uint32_t counts = l.piece_counts[k];
      l.valid[k] += std::int32_t(counts & 0xFFU);
      l.clipped_low[k] += std::int32_t((counts >> 8) & 0xFFU);
      l.clipped_high[k] += std::int32_t((counts >> 16) & 0xFFU);
      l.dual_clipped[k] += std::int32_t(counts >> 24);
      l.piece_counts[k] = 0;
      l.policy_loss[k] += weight * double(l.piece_policy[k]);
      l.neg_delta[k] += double(l.piece_neg_delta[k]);
      l.advantage[k] += double(l.piece_advantage[k]);
      l.advantage_sq[k] += double(l.piece_advantage_sq[k]);
      l.piece_policy[k] = l.piece_neg_delta[k] = l.piece_advantage[k] = l.piece_advantage_sq[k] =
          T(0);
      if constexpr (has_ref) {
        l.kl_value[k] += double(l.piece_kl[k]);
        l.kl_loss[k] += weight * double(p.kl_beta) * double(l.piece_kl[k]);
        l.piece_kl[k] = T(0);
      }
      if constexpr (has_entropy) {
        l.entropy[k] += double(l.piece_entropy[k]);
        l.entropy_loss[k] += -weight * double(p.entropy_coef) * double(l.piece_entropy[k]);
        l.piece_entropy[k] = T(0);
      }
      if constexpr (has_rollout) {
        l.importance_weight[k] += double(l.piece_importance_weight[k]);
        l.piece_importance_weight[k] = T(0);
      }
    }
  }

  RLCORE_DETAIL_FORCE_INLINE void host_store(const host_chunk& c, index_t k, index_t i,
                                             index_t t) const {
    grad_log_probs(i, t) = c.grad[k];
    if constexpr (is_present<GradEntropy>) {
      grad_entropy(i, t) = c.grad_entropy[k];
    }
  }

  [[nodiscard]] policy_token_sums host_finish(const host_lanes& l) const {
    policy_token_sums s;
    for (index_t k = 0; k < host_chunk::width; ++k) {
      s.policy_loss += l.policy_loss[k];
      s.valid += double(l.valid[k]);
      s.clipped_low += double(l.clipped_low[k]);
      s.clipped_high += double(l.clipped_high[k]);
      s.dual_clipped += double(l.dual_clipped[k]);
      s.neg_delta += l.neg_delta[k];
      s.advantage += l.advantage[k];
      s.advantage_sq += l.advantage_sq[k];
      if constexpr (has_ref) {
        s.kl_loss += l.kl_loss[k];
        s.kl_value += l.kl_value[k];
      }
      if constexpr (has_entropy) {
        s.entropy_loss += l.entropy_loss[k];
        s.entropy += l.entropy[k];
        s.entropy_kept += double(l.entropy_kept[k]);
      }
      if constexpr (has_rollout) {
        s.importance_weight += l.importance_weight[k];
        s.importance_corrected += double(l.importance_corrected[k]);
      }
    }
    if constexpr (!has_entropy) {
      s.entropy_kept = s.valid; // no entropy mask without entropy: every valid token kept
    }
    if constexpr (!has_rollout) {
      s.importance_weight = s.valid; // no importance correction without rollout log-probs
    }
    return s;
  }

  /// The row's sequence-level importance weight (1 unless sequence-level correction is on).
  RLCORE_HD T is_sequence_weight(index_t i) const {
    if (p.is_level == importance_level::sequence) {
      return p.importance_weight(T(rows[i].sum_rollout_log_ratio)).value;
    }
    return T(1);
  }
};

} // namespace rlcore::detail

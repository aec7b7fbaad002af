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

  // host whole-row form (execution_context<host_space>::reduce_rows) when only n_i is needed: a
  // count over the row's mask, no per-token sums
  [[nodiscard]] bool host_row_sum_enabled() const { return p.row_counts_only; }
  [[nodiscard]] policy_row_stats host_row_sum(index_t i) const {
    policy_row_stats s;
    s.valid = static_cast<double>(host_row_valid_count(layout, i));
    return s;
  }
};

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
  T grad[width], grad_entropy[width];                                    ///< outputs to scatter
  T weight = T(0); ///< the row's aggregation weight
};

/// The option values the host chunked body reads, held by value next to the row's pointers (so
/// that they stay in registers: the gradient stores through pointers could alias the functor).
template <class T>
struct policy_host_constants {
  T clamp, eps_low, eps_high, dual_clip, delta_clip;
  T kl_beta, kl_output_min, kl_output_max;
  T entropy_coef, entropy_threshold;
  T sapo_tau_pos, sapo_tau_neg;
  policy_loss loss;
  kl_estimator kl;
  bool kl_output_clamp, entropy_mask;
};

/// A host chunk's slots as pointers: a row read and written in place (pointers at its token 0,
/// element types as the views'; mask null when the layout has none), or a policy_token_chunk's
/// arrays. Slot s of the chunk starting at t0 is element t0 + s.
template <class T, class Valid, class LP, class Old, class Adv, class Ref, class Ent, class Grad,
          class GradEntropy>
struct policy_host_slots {
  Valid valid; ///< != 0 for a valid slot
  LP lp;
  Old old;
  Adv advantage;
  Ref ref;
  Ent entropy;
  Grad grad;
  GradEntropy grad_entropy;
  T weight; ///< the row's aggregation weight
  policy_host_constants<T> constants;
};

/// The host chunked path's metric sums: one lane per chunk slot (summed in slot order at the
/// end). Per token, the unweighted terms go to `piece` sums in T over a piece of a row (at most
/// policy_token_chunk::pieces chunks), and the four token counts (valid, clipped low, clipped high,
/// dual clipped) to one 32-bit word of four 8-bit fields (piece_count_unit); host_flush adds each
/// piece, the loss terms times the row's weight, to the double lanes and the counts to 32-bit
/// lanes (the path is only taken when a lane cannot overflow). The entropy and KL lanes exist
/// only when those inputs are given.
template <class T, index_t W, bool HasRef, bool HasEntropy>
struct policy_token_lanes {
  T piece_policy[W], piece_neg_delta[W], piece_advantage[W], piece_advantage_sq[W];
  T piece_kl[HasRef ? W : 1], piece_entropy[HasEntropy ? W : 1];
  std::uint32_t piece_counts[W]; ///< per field (8 bits): tokens of the piece counted
  double policy_loss[W];
  double neg_delta[W], advantage[W], advantage_sq[W];
  double kl_value[HasRef ? W : 1], kl_loss[HasRef ? W : 1];
  double entropy[HasEntropy ? W : 1], entropy_loss[HasEntropy ? W : 1];
  std::int32_t valid[W];
  std::int32_t clipped_low[W], clipped_high[W], dual_clipped[W];
  std::int32_t entropy_kept[HasEntropy ? W : 1];
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

  // Host chunked path (execution_context<host_space>::reduce_tokens): the clipped surrogate,
  // CISPO, REINFORCE and SAPO without importance correction, W token slots of a row at a time. A
  // row whose views are all contiguous along it is read and written in place, pointers and option
  // values resolved once per row (host_row_begin, host_compute_row); other chunks (the last,
  // partial chunk of a row; a row that is not contiguous) go through the local arrays of host_chunk
  // (host_load, host_compute, host_store). Both run the same per-slot body (host_compute_slot:
  // selects, no branches, no calls) in a loop the compiler vectorises; the metric sums go to W
  // lanes (slot k to lane k) summed in a fixed order by host_finish. Same formulas as operator().
  static constexpr bool has_ref = is_present<decltype(std::declval<Views>().ref_log_probs)>;
  static constexpr bool has_entropy = is_present<decltype(std::declval<Views>().entropy)>;
  using host_chunk = policy_token_chunk<T>;
  using host_lanes = policy_token_lanes<T, host_chunk::width, has_ref, has_entropy>;
  /// The in-place slots of a contiguous row.
  using host_row = policy_host_slots<
      T, decltype(contiguous_mask_row(std::declval<const Layout&>(), index_t{0}, index_t{0})),
      contiguous_row_pointer<decltype(Views::log_probs)>,
      contiguous_row_pointer<decltype(Views::old_log_probs)>,
      contiguous_row_pointer<decltype(Views::advantages)>,
      contiguous_row_pointer<decltype(Views::ref_log_probs)>,
      contiguous_row_pointer<decltype(Views::entropy)>, contiguous_row_pointer<Grad>,
      contiguous_row_pointer<GradEntropy>>;

  /// Kernel variants of the chunked form: 0 general (clipped surrogate, CISPO or REINFORCE, any
  /// KL estimator); 1 the GRPO / PPO defaults (clipped surrogate, KL estimator k3 without output
  /// clamp, no dual clip, no delta clip) with those options as constants, so that the selects on
  /// them fold away; 2 SAPO (any KL estimator).
  static constexpr int host_variants = 3;
  /// The variant with FMA-contracted kernels (host_context::contract_fma): the GRPO / PPO defaults.
  static constexpr int host_fma_variant = 1;
  [[nodiscard]] int host_variant() const {
    if (p.loss == policy_loss::sapo) {
      return 2;
    }
    const bool grpo_defaults = p.loss == policy_loss::clipped && p.dual_clip == T(0)
                               && p.delta_clip == T(0)
                               && (!has_ref || (p.kl == kl_estimator::k3 && !p.kl_output_clamp));
    return grpo_defaults ? 1 : 0;
  }

  [[nodiscard]] bool host_chunk_enabled() const {
    // a 32-bit count lane sees at most token_slots / width + 1 tokens
    constexpr index_t max_slots = index_t(2147483647) * (host_chunk::width - 1);
    const bool chunked_form = p.loss == policy_loss::clipped || p.loss == policy_loss::cispo
                              || p.loss == policy_loss::reinforce || p.loss == policy_loss::sapo;
    return chunked_form && p.is_level == importance_level::none
           && layout.token_slots() <= max_slots;
  }

  [[nodiscard]] policy_host_constants<T> host_constants() const {
    return {p.clamp,        p.eps_low,       p.eps_high,      p.dual_clip,    p.delta_clip,
            p.kl_beta,      p.kl_output_min, p.kl_output_max, p.entropy_coef, p.entropy_threshold,
            p.sapo_tau_pos, p.sapo_tau_neg,  p.loss,          p.kl,           p.kl_output_clamp,
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

  /// Whether every view of row i (mask included) is contiguous along the row; if so, r holds the
  /// row's pointers, weight and the option values for host_compute_row.
  [[nodiscard]] bool host_row_begin(host_row& r, index_t i) const {
    r.valid = contiguous_mask_row(layout, i, 0);
    r.lp = contiguous_row(v.log_probs, i, 0);
    r.old = contiguous_row(v.old_log_probs, i, 0);
    r.advantage = contiguous_row(v.advantages, i, 0);
    r.ref = contiguous_row(v.ref_log_probs, i, 0);
    r.entropy = contiguous_row(v.entropy, i, 0);
    r.grad = contiguous_row(grad_log_probs, i, 0);
    r.grad_entropy = contiguous_row(grad_entropy, i, 0);
    r.weight = host_row_weight(i);
    r.constants = host_constants();
    return r.lp != nullptr && r.old != nullptr && r.advantage != nullptr
           && (!has_ref || r.ref != nullptr) && (!has_entropy || r.entropy != nullptr)
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
    c.weight = host_row_weight(i);
  }

  RLCORE_DETAIL_FORCE_INLINE void host_load_padding(host_chunk& c, index_t k) const {
    c.valid[k] = T(0);
    c.lp[k] = c.old[k] = c.advantage[k] = c.ref[k] = c.entropy[k] = T(0);
  }

  /// The per-slot body over the local arrays of chunk c (Variant as host_variant()).
  template <int Variant>
  RLCORE_DETAIL_FORCE_INLINE void host_compute(host_chunk& c, host_lanes& l) const {
    const policy_host_slots<T, const T*, const T*, const T*, const T*, const T*, const T*, T*, T*>
        slots{c.valid,   c.lp,   c.old,          c.advantage, c.ref,
              c.entropy, c.grad, c.grad_entropy, c.weight,    host_constants()};
    host_compute_slots<Variant, true>(slots, 0, l);
  }

  /// The per-slot body over slots t0 .. t0 + width - 1 of `slots`: a loop the compiler
  /// vectorises (inputs converted to T, outputs to the element types of the pointers).
  template <int Variant, bool HasValid, class Slots>
  RLCORE_DETAIL_FORCE_INLINE void host_compute_slots(const Slots& slots, index_t t0,
                                                     host_lanes& l) const {
    const policy_host_constants<T> constants = slots.constants;
    const T weight = slots.weight;
    const auto* valid = slots.valid;
    const auto* lp = slots.lp + t0;
    const auto* old = slots.old + t0;
    const auto* advantage = slots.advantage + t0;
    const auto* ref = slots.ref;
    const auto* entropy = slots.entropy;
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
    if constexpr (is_present<GradEntropy>) {
      grad_h += t0;
    }
    RLCORE_DETAIL_POLICY_INDEPENDENT_ITERATIONS
    for (index_t k = 0; k < host_chunk::width; ++k) {
      bool slot_valid = true;
      if constexpr (HasValid) {
        slot_valid = valid_t[k] != T(0);
      }
      T ref_k = T(0);
      T entropy_k = T(0);
      if constexpr (has_ref) {
        ref_k = T(ref[k]);
      }
      if constexpr (has_entropy) {
        entropy_k = T(entropy[k]);
      }
      T grad_k;
      T grad_entropy_k;
      host_compute_slot<Variant>(constants, slot_valid, T(lp[k]), T(old[k]), T(advantage[k]), ref_k,
                                 entropy_k, weight, grad_k, grad_entropy_k, l, k);
      grad[k] = std::remove_cvref_t<decltype(*grad)>(grad_k);
      if constexpr (is_present<GradEntropy>) {
        grad_h[k] = std::remove_cvref_t<decltype(*grad_h)>(grad_entropy_k);
      }
    }
  }

  /// The per-slot body: slot k's inputs (anything when masked), its outputs and lanes.
  template <int Variant>
  RLCORE_DETAIL_FORCE_INLINE void
  host_compute_slot(const policy_host_constants<T>& constants, bool valid, T lp_raw, T old_raw,
                    T advantage_raw, T ref_raw, T entropy_raw, T weight, T& grad_out,
                    T& grad_entropy_out, host_lanes& l, index_t k) const {
    using math::select;
    constexpr bool grpo_defaults = Variant == 1;
    const T dual_clip = grpo_defaults ? T(0) : constants.dual_clip;
    const T delta_clip = grpo_defaults ? T(0) : constants.delta_clip;
    const kl_estimator estimator = grpo_defaults ? kl_estimator::k3 : constants.kl;
    const bool kl_output_clamp = grpo_defaults ? false : constants.kl_output_clamp;
    // A masked slot's inputs are replaced by 0 (they may be inf or NaN), so every term below is
    // finite; its outputs and sums are then selected to exactly 0 (never multiplied by a mask).
    const T lp = select(valid, lp_raw, T(0));
    const T advantage = select(valid, advantage_raw, T(0));
    const T raw_delta = lp - select(valid, old_raw, T(0)); // 0 when masked
    math::clamped_value<T> delta = math::clamp_log_ratio(raw_delta, constants.clamp);
    const T ratio = math::exp_vectorizable_bounded(delta.value); // |delta| <= clamp <= 80
    math::surrogate_term<T> term{};
    if constexpr (Variant == 2) {
      term = math::sapo_surrogate_of_ratio(ratio, advantage, constants.sapo_tau_pos,
                                           constants.sapo_tau_neg);
    } else {
      term = math::clipped_surrogate_of_ratio(ratio, advantage, constants.eps_low,
                                              constants.eps_high, dual_clip, delta_clip);
    }
    T policy_gate = delta.gate; // d ratio / d lp / ratio where the surrogate's gradient has it
    if constexpr (Variant == 0) {
      // CISPO and REINFORCE: all three forms computed, the call's one selected (a uniform choice;
      // selects, no branch); neither passes its gradient through the clamped ratio
      const bool cispo = constants.loss == policy_loss::cispo;
      const bool reinforce = constants.loss == policy_loss::reinforce;
      term = select_term(
          cispo, math::cispo_surrogate_of_ratio(ratio, lp, advantage, constants.eps_high), term);
      term = select_term(reinforce, math::reinforce_surrogate(lp, advantage), term);
      policy_gate = select(cispo | reinforce, T(1), policy_gate);
    }
    bool kept = true;
    T entropy = T(0);
    if constexpr (has_entropy) {
      entropy = select(valid, entropy_raw, T(0));
      kept = !constants.entropy_mask | (entropy >= constants.entropy_threshold);
    }
    const bool counted = valid & kept;
    T gradient = weight * select(counted, term.gradient * policy_gate, T(0));
    l.piece_policy[k] += select(counted, term.value, T(0)); // times the weight in host_flush
    if constexpr (has_ref) {
      const T ref = select(valid, ref_raw, T(0));
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
    l.piece_counts[k] += (valid ? piece_count_unit(0) : 0U)
                         + ((valid & term.clipped_low) ? piece_count_unit(1) : 0U)
                         + ((valid & term.clipped_high) ? piece_count_unit(2) : 0U)
                         + ((valid & term.dual_clipped) ? piece_count_unit(3) : 0U);
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
    }
    if constexpr (!has_entropy) {
      s.entropy_kept = s.valid; // no entropy mask without entropy: every valid token kept
    }
    s.importance_weight = s.valid; // no importance correction on this path: weight 1 per token
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

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
/// (column / flat stride 1), else null; null for an absent view.
template <class View>
RLCORE_DETAIL_FORCE_INLINE auto* contiguous_row(const View& view, index_t i, index_t t0) {
  if constexpr (!is_present<View>) {
    return static_cast<const float*>(nullptr);
  } else {
    using pointer = decltype(&view(i, t0));
    if constexpr (requires { view.flat.stride; }) {
      return view.flat.stride == 1 ? &view(i, t0) : pointer(nullptr);
    } else {
      return view.col_stride == 1 ? &view(i, t0) : pointer(nullptr);
    }
  }
}

/// The local arrays of one host chunk of the token pass (inputs gathered, gradients to scatter).
template <class T>
struct policy_token_chunk {
  static constexpr index_t width = 32;
  /// Chunks of a row per piece of the T-precision metric sums (see policy_token_lanes).
  static constexpr index_t pieces = 8;
  T valid[width];                                                        ///< 1 or 0
  T lp[width], old[width], advantage[width], ref[width], entropy[width]; ///< gathered inputs
  T grad[width], grad_entropy[width];                                    ///< outputs to scatter
  T weight = T(0); ///< the row's aggregation weight
  // Where the per-slot body reads its inputs and writes its outputs: the arrays above, or, for a
  // full chunk of a row that is contiguous with elements of type T, the views' own memory.
  const T* lp_in = lp;
  const T* old_in = old;
  const T* advantage_in = advantage;
  const T* ref_in = ref;
  const T* entropy_in = entropy;
  T* grad_out = grad;
  T* grad_entropy_out = grad_entropy;

  /// Points every input and output at the local arrays.
  void use_local_arrays() {
    lp_in = lp;
    old_in = old;
    advantage_in = advantage;
    ref_in = ref;
    entropy_in = entropy;
    grad_out = grad;
    grad_entropy_out = grad_entropy;
  }
};

/// Points `in` at the contiguous source `source` when its elements are of type T, else copies the
/// `width` elements into `local` (converting to T) and points `in` at it.
template <class T, index_t Width, class Source>
RLCORE_DETAIL_FORCE_INLINE void gather_row_input(const T*& in, T (&local)[Width],
                                                 const Source* source) {
  if constexpr (std::is_same_v<std::remove_cv_t<Source>, T>) {
    in = source;
  } else {
    for (index_t k = 0; k < Width; ++k) {
      local[k] = T(source[k]);
    }
    in = local;
  }
}

/// The host chunked path's metric sums: one lane per chunk slot (summed in slot order at the
/// end). Per token, the unweighted terms go to `piece` sums in T over a piece of a row (at most
/// policy_token_chunk::pieces chunks); host_flush adds each piece, times the row's weight, to the
/// double lanes. Token counts in 32-bit integers (the path is only taken when a lane cannot
/// overflow). The entropy and KL lanes exist only when those inputs are given.
template <class T, index_t W, bool HasRef, bool HasEntropy>
struct policy_token_lanes {
  T piece_policy[W], piece_neg_delta[W], piece_advantage[W], piece_advantage_sq[W];
  T piece_kl[HasRef ? W : 1], piece_entropy[HasEntropy ? W : 1];
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

  /// The KL estimate of one token (output clamp applied when `output_clamp`); ratio and gate as
  /// math::kl_estimate_of_ratio.
  RLCORE_DETAIL_FORCE_INLINE RLCORE_HD math::value_and_gradient<T>
  kl_term(kl_estimator estimator, bool output_clamp, T lp_minus_ref, T ratio, T ratio_gate) const {
    math::value_and_gradient<T> kl =
        math::kl_estimate_of_ratio(estimator, lp_minus_ref, ratio, ratio_gate, p.clamp);
    math::value_and_gradient<T> clamped =
        math::clamp_kl_output(kl, p.kl_output_min, p.kl_output_max);
    return {math::select(output_clamp, clamped.value, kl.value),
            math::select(output_clamp, clamped.gradient, kl.gradient)};
  }

  // Host chunked path (execution_context<host_space>::reduce_tokens): the clipped surrogate
  // without importance correction, W token slots at a time. load/store move a slot between the
  // views and the chunk's local arrays; compute is the per-slot body over those arrays only
  // (selects, no branches, no calls), so the host loop over a chunk vectorises; the metric sums
  // go to W double lanes summed in a fixed order by finish. Same formulas as operator().
  static constexpr bool has_ref = is_present<decltype(std::declval<Views>().ref_log_probs)>;
  static constexpr bool has_entropy = is_present<decltype(std::declval<Views>().entropy)>;
  using host_chunk = policy_token_chunk<T>;
  using host_lanes = policy_token_lanes<T, host_chunk::width, has_ref, has_entropy>;

  /// Kernel variants of the chunked form: 0 general; 1 the GRPO / PPO defaults (KL estimator k3
  /// without output clamp, no dual clip, no delta clip) with those options as constants, so that
  /// the selects on them fold away.
  static constexpr int host_variants = 2;
  [[nodiscard]] int host_variant() const {
    const bool grpo_defaults = p.dual_clip == T(0) && p.delta_clip == T(0)
                               && (!has_ref || (p.kl == kl_estimator::k3 && !p.kl_output_clamp));
    return grpo_defaults ? 1 : 0;
  }

  [[nodiscard]] bool host_chunk_enabled() const {
    // a 32-bit count lane sees at most token_slots / width + 1 tokens
    constexpr index_t max_slots = index_t(2147483647) * (host_chunk::width - 1);
    return p.loss == policy_loss::clipped && p.is_level == importance_level::none
           && layout.token_slots() <= max_slots;
  }

  RLCORE_DETAIL_FORCE_INLINE void host_load(host_chunk& c, index_t k, index_t i, index_t t) const {
    c.use_local_arrays();
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
    c.weight = T(p.weights.row_weight(rows != nullptr ? rows[i].valid : 0.0));
  }

  /// host_load of the `width` slots t0 .. t0 + width - 1 of row i. When every view is contiguous
  /// along the row, the inputs (and outputs) of element type T are used in place and the others
  /// copied in one loop each; else token by token.
  RLCORE_DETAIL_FORCE_INLINE void host_load_full(host_chunk& c, index_t i, index_t t0) const {
    constexpr index_t width = host_chunk::width;
    const auto* lp = contiguous_row(v.log_probs, i, t0);
    const auto* old = contiguous_row(v.old_log_probs, i, t0);
    const auto* advantage = contiguous_row(v.advantages, i, t0);
    const auto* ref = contiguous_row(v.ref_log_probs, i, t0);
    const auto* entropy = contiguous_row(v.entropy, i, t0);
    const auto* mask = contiguous_mask_row(layout, i, t0);
    auto* grad = contiguous_row(grad_log_probs, i, t0);
    auto* grad_h = contiguous_row(grad_entropy, i, t0);
    const bool contiguous = lp != nullptr && old != nullptr && advantage != nullptr
                            && (!has_ref || ref != nullptr) && (!has_entropy || entropy != nullptr)
                            && (mask != nullptr || !layout_has_mask(layout)) && grad != nullptr
                            && (!is_present<GradEntropy> || grad_h != nullptr);
    if (!contiguous) {
      for (index_t k = 0; k < width; ++k) {
        host_load(c, k, i, t0 + k);
      }
      return;
    }
    c.weight = T(p.weights.row_weight(rows != nullptr ? rows[i].valid : 0.0));
    gather_row_input(c.lp_in, c.lp, lp);
    gather_row_input(c.old_in, c.old, old);
    gather_row_input(c.advantage_in, c.advantage, advantage);
    if constexpr (has_ref) {
      gather_row_input(c.ref_in, c.ref, ref);
    }
    if constexpr (has_entropy) {
      gather_row_input(c.entropy_in, c.entropy, entropy);
    }
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(*grad)>, T>) {
      c.grad_out = grad;
    } else {
      c.grad_out = c.grad;
    }
    if constexpr (is_present<GradEntropy>) {
      if constexpr (std::is_same_v<std::remove_cvref_t<decltype(*grad_h)>, T>) {
        c.grad_entropy_out = grad_h;
      } else {
        c.grad_entropy_out = c.grad_entropy;
      }
    }
    if (mask != nullptr) {
      using mask_type = std::remove_cvref_t<decltype(*mask)>;
      for (index_t k = 0; k < width; ++k) {
        c.valid[k] = mask[k] != mask_type(0) ? T(1) : T(0);
      }
    } else {
      for (index_t k = 0; k < width; ++k) {
        c.valid[k] = T(1);
      }
    }
  }

  /// host_store of the `width` slots t0 .. t0 + width - 1 of row i: nothing for outputs written
  /// in place, else one copy loop when the outputs are contiguous along the row, else slot by
  /// slot.
  RLCORE_DETAIL_FORCE_INLINE void host_store_full(const host_chunk& c, index_t i,
                                                  index_t t0) const {
    constexpr index_t width = host_chunk::width;
    const bool grad_in_place = c.grad_out != c.grad;
    const bool grad_entropy_in_place =
        !is_present<GradEntropy> || c.grad_entropy_out != c.grad_entropy;
    if (grad_in_place && grad_entropy_in_place) {
      return;
    }
    auto* grad = contiguous_row(grad_log_probs, i, t0);
    auto* grad_h = contiguous_row(grad_entropy, i, t0);
    if (grad == nullptr || (is_present<GradEntropy> && grad_h == nullptr)) {
      for (index_t k = 0; k < width; ++k) {
        host_store(c, k, i, t0 + k);
      }
      return;
    }
    if (!grad_in_place) {
      using grad_type = std::remove_cvref_t<decltype(*grad)>;
      for (index_t k = 0; k < width; ++k) {
        grad[k] = grad_type(c.grad[k]);
      }
    }
    if constexpr (is_present<GradEntropy>) {
      if (!grad_entropy_in_place) {
        using grad_entropy_type = std::remove_cvref_t<decltype(*grad_h)>;
        for (index_t k = 0; k < width; ++k) {
          grad_h[k] = grad_entropy_type(c.grad_entropy[k]);
        }
      }
    }
  }

  RLCORE_DETAIL_FORCE_INLINE void host_load_padding(host_chunk& c, index_t k) const {
    c.use_local_arrays();
    c.valid[k] = T(0);
    c.lp[k] = c.old[k] = c.advantage[k] = c.ref[k] = c.entropy[k] = T(0);
  }

  /// The per-slot body of the chunked form over the `width` slots of chunk c (Variant as
  /// host_variant()): a loop the compiler vectorises.
  template <int Variant>
  RLCORE_DETAIL_FORCE_INLINE void host_compute(host_chunk& c, host_lanes& l) const {
    const T* lp_in = c.lp_in;
    const T* old_in = c.old_in;
    const T* advantage_in = c.advantage_in;
    const T* ref_in = c.ref_in;
    const T* entropy_in = c.entropy_in;
    T* grad_out = c.grad_out;
    T* grad_entropy_out = c.grad_entropy_out;
    const T weight = c.weight;
    RLCORE_DETAIL_POLICY_INDEPENDENT_ITERATIONS
    for (index_t k = 0; k < host_chunk::width; ++k) {
      host_compute_slot<Variant>(c.valid[k] != T(0), lp_in[k], old_in[k], advantage_in[k],
                                 ref_in[k], entropy_in[k], weight, grad_out[k], grad_entropy_out[k],
                                 l, k);
    }
  }

  /// The per-slot body: slot k's inputs (anything when masked), its outputs and lanes.
  template <int Variant>
  RLCORE_DETAIL_FORCE_INLINE void
  host_compute_slot(bool valid, T lp_raw, T old_raw, T advantage_raw, T ref_raw, T entropy_raw,
                    T weight, T& grad_out, T& grad_entropy_out, host_lanes& l, index_t k) const {
    using math::select;
    constexpr bool grpo_defaults = Variant == 1;
    const T dual_clip = grpo_defaults ? T(0) : p.dual_clip;
    const T delta_clip = grpo_defaults ? T(0) : p.delta_clip;
    const kl_estimator estimator = grpo_defaults ? kl_estimator::k3 : p.kl;
    const bool kl_output_clamp = grpo_defaults ? false : p.kl_output_clamp;
    // A masked slot's inputs are replaced by 0 (they may be inf or NaN), so every term below is
    // finite; its outputs and sums are then selected to exactly 0 (never multiplied by a mask).
    const T lp = select(valid, lp_raw, T(0));
    const T advantage = select(valid, advantage_raw, T(0));
    const T raw_delta = lp - select(valid, old_raw, T(0)); // 0 when masked
    math::clamped_value<T> delta = math::clamp_log_ratio(raw_delta, p.clamp);
    const T ratio = math::exp_vectorizable_bounded(delta.value); // |delta| <= clamp <= 80
    math::surrogate_term<T> term = math::clipped_surrogate_of_ratio(
        ratio, advantage, p.eps_low, p.eps_high, dual_clip, delta_clip);
    bool kept = true;
    T entropy = T(0);
    if constexpr (has_entropy) {
      entropy = select(valid, entropy_raw, T(0));
      kept = !p.entropy_mask | (entropy >= p.entropy_threshold);
    }
    const bool counted = valid & kept;
    T gradient = weight * select(counted, term.gradient * delta.gate, T(0));
    l.piece_policy[k] += select(counted, term.value, T(0)); // times the weight in host_flush
    if constexpr (has_ref) {
      const T ref = select(valid, ref_raw, T(0));
      math::value_and_gradient<T> kl =
          kl_term(estimator, kl_output_clamp, lp - ref, ratio, delta.gate);
      gradient += weight * p.kl_beta * kl.gradient;
      l.piece_kl[k] += select(valid, kl.value, T(0));
    }
    grad_out = select(valid, gradient, T(0));
    if constexpr (has_entropy) {
      grad_entropy_out = select(valid, -weight * p.entropy_coef, T(0));
      l.piece_entropy[k] += entropy;
      l.entropy_kept[k] += counted ? 1 : 0;
    }
    l.valid[k] += valid ? 1 : 0;
    l.clipped_low[k] += (valid & term.clipped_low) ? 1 : 0;
    l.clipped_high[k] += (valid & term.clipped_high) ? 1 : 0;
    l.dual_clipped[k] += (valid & term.dual_clipped) ? 1 : 0;
    l.piece_neg_delta[k] -= raw_delta;
    l.piece_advantage[k] += advantage;
    l.piece_advantage_sq[k] += advantage * advantage;
  }

  /// Adds the piece sums of row i to the double lanes (the weighted losses times the row's
  /// weight, as the token pass weighs them) and clears them.
  RLCORE_DETAIL_FORCE_INLINE void host_flush(host_lanes& l, index_t i) const {
    const auto weight = double(T(p.weights.row_weight(rows != nullptr ? rows[i].valid : 0.0)));
    for (index_t k = 0; k < host_chunk::width; ++k) {
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

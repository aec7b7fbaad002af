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
      term = math::clipped_surrogate(delta.value, advantage, p.eps_low, p.eps_high, p.dual_clip,
                                     p.delta_clip);
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
      math::value_and_gradient<T> kl =
          math::kl_estimate(p.kl, lp - T(v.ref_log_probs(i, t)), raw_delta, p.clamp);
      if (p.kl_output_clamp) {
        kl = math::clamp_kl_output(kl, p.kl_output_min, p.kl_output_max);
      }
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

  /// The row's sequence-level importance weight (1 unless sequence-level correction is on).
  RLCORE_HD T is_sequence_weight(index_t i) const {
    if (p.is_level == importance_level::sequence) {
      return p.importance_weight(T(rows[i].sum_rollout_log_ratio)).value;
    }
    return T(1);
  }
};

} // namespace rlcore::detail

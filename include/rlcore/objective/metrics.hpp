// Metrics returned by the objectives, and the accumulator the fused token pass sums them in.
#pragma once

#include "../config.hpp"
#include "../math/functions.hpp"

namespace rlcore {

/// Metrics of one policy_objective call. Fractions and means are over the valid tokens of the
/// call (local, not divided by global counts).
struct objective_metrics {
  double policy_loss = 0;            ///< aggregated policy-loss part of `loss`
  double kl_loss = 0;                ///< aggregated beta * KL part of `loss`
  double entropy_loss = 0;           ///< aggregated -coef * entropy part of `loss`
  double clip_fraction_low = 0;      ///< tokens whose lower clip is active
  double clip_fraction_high = 0;     ///< tokens whose upper clip is active (CISPO: truncated)
  double clip_fraction = 0;          ///< low + high
  double dual_clip_fraction = 0;     ///< tokens whose dual clip is active
  double approx_kl = 0;              ///< mean(old - lp) = mean(-delta), unclamped
  double kl_penalty_mean = 0;        ///< mean KL estimator value (0 when no KL penalty)
  double entropy_mean = 0;           ///< mean entropy (0 when no entropy given)
  double advantage_mean = 0;         ///< mean advantage
  double advantage_std = 0;          ///< population std of the advantages (one pass, in double)
  double importance_weight_mean = 0; ///< mean rollout-correction weight (1 when off)
  double importance_corrected_fraction = 0; ///< tokens whose weight was truncated or masked
  double entropy_kept_fraction = 1;         ///< tokens kept by entropy masking
  double zero_spread_group_fraction = 0;    ///< not computed here: the caller copies it from the
                                            ///< advantage estimator's statistics
  double valid_tokens = 0;                  ///< number of valid tokens
};

/// The scalar loss and its metrics.
struct objective_result {
  double loss = 0;
  objective_metrics metrics;
};

namespace detail {

/// Sums of the fused token pass (one per token, added in the context's deterministic reduction).
struct policy_token_sums {
  double policy_loss = 0;
  double kl_loss = 0;
  double entropy_loss = 0;
  double valid = 0;
  double clipped_low = 0;
  double clipped_high = 0;
  double dual_clipped = 0;
  double neg_delta = 0;
  double kl_value = 0;
  double entropy = 0;
  double advantage = 0;
  double advantage_sq = 0;
  double importance_weight = 0;
  double importance_corrected = 0;
  double entropy_kept = 0;

  RLCORE_HD constexpr policy_token_sums& operator+=(const policy_token_sums& o) {
    policy_loss += o.policy_loss;
    kl_loss += o.kl_loss;
    entropy_loss += o.entropy_loss;
    valid += o.valid;
    clipped_low += o.clipped_low;
    clipped_high += o.clipped_high;
    dual_clipped += o.dual_clipped;
    neg_delta += o.neg_delta;
    kl_value += o.kl_value;
    entropy += o.entropy;
    advantage += o.advantage;
    advantage_sq += o.advantage_sq;
    importance_weight += o.importance_weight;
    importance_corrected += o.importance_corrected;
    entropy_kept += o.entropy_kept;
    return *this;
  }
  RLCORE_HD friend constexpr policy_token_sums operator+(policy_token_sums a,
                                                         const policy_token_sums& b) {
    a += b;
    return a;
  }
};

/// Turns the sums into the loss and metrics.
inline objective_result finish_policy_metrics(const policy_token_sums& s, bool has_entropy) {
  objective_result r;
  r.loss = s.policy_loss + s.kl_loss + s.entropy_loss;
  objective_metrics& m = r.metrics;
  m.policy_loss = s.policy_loss;
  m.kl_loss = s.kl_loss;
  m.entropy_loss = s.entropy_loss;
  m.valid_tokens = s.valid;
  if (s.valid > 0) {
    const double n = s.valid;
    m.clip_fraction_low = s.clipped_low / n;
    m.clip_fraction_high = s.clipped_high / n;
    m.clip_fraction = (s.clipped_low + s.clipped_high) / n;
    m.dual_clip_fraction = s.dual_clipped / n;
    m.approx_kl = s.neg_delta / n;
    m.kl_penalty_mean = s.kl_value / n;
    m.entropy_mean = has_entropy ? s.entropy / n : 0.0;
    m.advantage_mean = s.advantage / n;
    const double var = s.advantage_sq / n - m.advantage_mean * m.advantage_mean;
    m.advantage_std = math::sqrt(var > 0 ? var : 0.0);
    m.importance_weight_mean = s.importance_weight / n;
    m.importance_corrected_fraction = s.importance_corrected / n;
    m.entropy_kept_fraction = s.entropy_kept / n;
  }
  return r;
}

} // namespace detail
} // namespace rlcore

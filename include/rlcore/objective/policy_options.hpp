// Options of policy_objective: the loss form, clipping, KL penalty, entropy bonus and masking,
// rollout importance-sampling correction and aggregation. Defaults follow ALGORITHMS.md.
#pragma once

#include "../math/kl.hpp"
#include "aggregate.hpp"

namespace rlcore {

/// Which policy loss a token (or sequence) contributes; formulas in math/surrogate.hpp.
enum class policy_loss {
  clipped,  ///< PPO / GRPO clipped surrogate (+ optional dual clip and delta clip)
  gspo,     ///< GSPO: clipped surrogate on the sequence ratio exp(mean delta)
  gmpo,     ///< GMPO: -A * exp(mean of sign(A)-clipped log-ratios)
  cispo,    ///< CISPO: -stopgrad(min(ratio, 1 + eps_high)) * A * lp
  sapo,     ///< SAPO: -A * (4 / tau) * sigmoid(tau * (ratio - 1))
  reinforce ///< REINFORCE / GPG: -A * lp
};

/// GSPO variant: `sequence` (the gradient of s_i flows to every token of row i, s_i / n_i each,
/// and the sequence advantage is the mean of the row's token advantages) or `token` (GSPO-token:
/// each token sees the value s_i, its own advantage, and gradient only through its own lp).
enum class gspo_level { sequence, token };

/// Level of the rollout/trainer importance-sampling correction.
enum class importance_level {
  none,    ///< no correction
  token,   ///< w[i, t] = exp(old - rollout) per token
  sequence ///< w_i = exp(sum_t (old - rollout)) over the valid tokens of row i
};

/// How an importance weight w is bounded.
enum class importance_mode {
  truncate, ///< min(w, cap) (TIS)
  mask      ///< w where low <= w <= high, 0 outside (MIS)
};

/// Importance-sampling correction for the mismatch between the rollout engine's log-probs and the
/// trainer's old log-probs. The weights are constants (no gradient) and multiply the policy-loss
/// term only (not the KL penalty or the entropy bonus). Log-ratios are clamped by
/// policy_options::log_ratio_clamp before exp.
struct importance_correction_options {
  importance_level level = importance_level::none;
  importance_mode mode = importance_mode::truncate;
  double cap = 2.0;  ///< truncate: C > 0
  double low = 0.5;  ///< mask: lower bound >= 0
  double high = 2.0; ///< mask: upper bound >= low
};

/// Options of policy_objective (defaults: PPO/GRPO clip 0.2/0.2, no KL, no entropy bonus,
/// token-mean aggregation).
struct policy_options {
  policy_loss loss = policy_loss::clipped;
  // clipped (and CISPO's truncation, which uses eps_high)
  double eps_low = 0.2;  ///< lower clip 1 - eps_low, in [0, 1]
  double eps_high = 0.2; ///< upper clip 1 + eps_high, >= 0 (DAPO clip-higher: 0.28)
  double dual_clip = 0;  ///< dual-clip constant c (> 1), 0 = off
  double delta_clip =
      0; ///< INTELLECT-2 delta: unclipped branch uses min(ratio, delta) (> 1), 0 = off
  // GSPO
  gspo_level gspo = gspo_level::sequence;
  double gspo_eps_low = 3e-4;  ///< >= 0
  double gspo_eps_high = 4e-4; ///< >= 0
  // GMPO (clip range in log space: [-eps_low, eps_high])
  double gmpo_eps_low = 0.4;  ///< >= 0
  double gmpo_eps_high = 0.4; ///< >= 0
  // SAPO temperatures
  double sapo_tau_pos = 1.0;  ///< > 0, used where A > 0
  double sapo_tau_neg = 1.05; ///< > 0, used where A <= 0
  /// Every log-ratio (lp - old, lp - ref, old - rollout) is clamped to [-c, c] before exp (> 0).
  double log_ratio_clamp = 20;
  // KL penalty beta * KL(lp, ref) (needs ref_log_probs when beta > 0)
  kl_estimator kl = kl_estimator::k3;
  double kl_beta = 0;           ///< >= 0; 0 = off
  bool kl_output_clamp = false; ///< clamp the KL value to [kl_output_min, kl_output_max]
  double kl_output_min = -10;
  double kl_output_max = 10;
  // entropy bonus -coef * H (needs entropy when coef != 0)
  double entropy_coef = 0;
  /// Entropy masking: keep the policy term only where H >= the (1 - fraction) quantile of the
  /// batch's valid entropies (linear interpolation, as torch.quantile). 1 = off. In (0, 1].
  double entropy_top_fraction = 1;
  importance_correction_options importance{};
  aggregation_options aggregation{};
};

} // namespace rlcore

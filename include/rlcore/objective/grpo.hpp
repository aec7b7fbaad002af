// The GRPO objective of DeepSeekMath (eq. 3) as one call:
//   J = (1/G) sum_i (1/|o_i|) sum_t [ min(r A, clip(r, 1 - eps, 1 + eps) A) - beta * k3 ]
// and the loss is -J: per token the clipped surrogate plus beta * k3(lp - ref), aggregated
// seq-mean-token-mean (sequences of the batch stand for the G of a group; with several groups the
// mean over all N sequences is the mean of the per-group objectives for equal group sizes).
#pragma once

#include "policy.hpp"

namespace rlcore {

/// Options of grpo_objective: DeepSeekMath defaults.
struct grpo_options {
  double eps = 0.2;                   ///< symmetric clip, in [0, 1]
  double beta = 0.04;                 ///< KL coefficient, >= 0
  kl_estimator kl = kl_estimator::k3; ///< DeepSeekMath eq. 4
  aggregation_options aggregation{aggregation::seq_mean_token_mean};
  double log_ratio_clamp = 20;

  /// The equivalent policy_options.
  [[nodiscard]] policy_options as_policy_options() const {
    policy_options o;
    o.loss = policy_loss::clipped;
    o.eps_low = eps;
    o.eps_high = eps;
    o.kl = kl;
    o.kl_beta = beta;
    o.aggregation = aggregation;
    o.log_ratio_clamp = log_ratio_clamp;
    return o;
  }
};

/// GRPO loss (DeepSeekMath eq. 3, negated) with its gradient d loss / d lp and metrics.
///   layout              padded or packed batch layout
///   log_probs, old_log_probs, ref_log_probs, advantages   per-token, float or double
///   grad_log_probs_out  per-token output (0 at masked slots)
/// Equivalent to policy_objective with options.as_policy_options(); same errors (the options are
/// named as policy_options fields).
template <batch_layout Layout, class LP, class Old, class Ref, class Adv, class Grad,
          memory_space Space = typename Layout::space>
requires token_tensor_for<const LP, Layout> && token_tensor_for<const Old, Layout> && token_tensor_for<
    const Ref,
    Layout> && token_tensor_for<const Adv,
                                Layout> && mutable_token_tensor_for<std::remove_reference_t<Grad>,
                                                                    Layout>
    objective_result grpo_objective(const Layout& layout, const LP& log_probs,
                                    const Old& old_log_probs, const Ref& ref_log_probs,
                                    const Adv& advantages, Grad&& grad_log_probs_out,
                                    const grpo_options& options = {},
                                    const execution_context<Space>& ctx = {}) {
  return policy_objective(
      layout, policy_inputs<LP, Old, Adv, Ref>{log_probs, old_log_probs, advantages, ref_log_probs},
      grad_log_probs_out, none, options.as_policy_options(), ctx);
}

} // namespace rlcore

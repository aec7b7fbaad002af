// Policy and GRPO losses straight from logits: token log-probs and entropy from the logits, the
// fused policy objective on them, and the chain rule back to d loss / d logits.
//
//   lp, H      = token_log_probs(logits / tau, token_ids)            (logits_token.hpp)
//   loss, dl/dlp, dl/dH = policy_objective(lp, old, A, ref, H)       (policy.hpp / grpo.hpp)
//   d loss / d logits = token_log_probs_backward(dl/dlp, dl/dH)      (logits_token.hpp)
//
// Shapes: logits (M x V, M = layout.token_slots(); token slot (i, t) is row i * T + t for a padded
// layout, offsets[i] + t for a packed one); token_ids, old_log_probs, ref_log_probs, advantages:
// per-token tensors of the layout; grad_logits_out: M x V. The intermediate per-token buffers are
// allocated in the context's memory, in the logits' accumulator precision (float for float
// logits, double for double). Masked token slots contribute nothing and get a zero gradient row
// (or are left untouched when logits_options::accumulate_gradient is set).
#pragma once

#include "../execution.hpp"
#include "../math/softmax.hpp"
#include "../tensor/concepts.hpp"
#include "../tensor/layout.hpp"
#include "grpo.hpp"
#include "logits_common.hpp"
#include "logits_token.hpp"
#include "policy.hpp"

#include <type_traits>

namespace rlcore {
namespace detail {

/// A per-token view of the layout over a buffer of layout.token_slots() elements: an N x T
/// row-major matrix (padded) or a flat vector (packed), element (i, t) at logits_row_of(i, t).
template <class Layout, class T>
auto token_buffer_view(const Layout& layout, T* data) {
  using S = typename Layout::space;
  if constexpr (Layout::is_packed) {
    return vector_view<T, S>{data, layout.token_slots(), 1};
  } else {
    return matrix_view<T, S>{data, layout.rows(), layout.cols(), layout.cols(), 1};
  }
}

} // namespace detail

/// Policy loss from logits with the entropy bonus and KL penalty of policy_options:
///   loss = policy_objective(layout, {lp, old_log_probs, advantages, ref_log_probs, H}).loss
/// with lp and H the log-probs and entropies of token_ids under softmax(logits / tau), and
/// grad_logits_out = d loss / d logits (through lp and, when options.entropy_coef != 0, H).
/// ref_log_probs may be rlcore::none (then options.kl_beta must be 0). The rollout importance
/// correction is not available here (call the three steps yourself). Returns the objective's
/// loss and metrics (entropy_mean included). Errors: those of token_log_probs (naming logits,
/// token_ids, options.temperature) and of policy_objective (naming its arguments and options).
template <batch_layout Layout, matrix_like Logits, class TokenIds, class Old, class Adv, class Ref,
          class GradLogits>
requires token_tensor_for<const TokenIds, Layout> && mutable_matrix_like<GradLogits>
    objective_result policy_loss_from_logits(
        const Layout& layout, const Logits& logits, const TokenIds& token_ids,
        const Old& old_log_probs, const Adv& advantages, const Ref& ref_log_probs,
        GradLogits&& grad_logits_out, const policy_options& options = {},
        const logits_options& logits_opts = {},
        const execution_context<typename Layout::space>& ctx = {}) {
  using acc = math::logit_accumulator<value_type_of<const Logits>>;
  const index_t slots = layout.token_slots();
  auto lp_buffer = ctx.template allocate<acc>(slots);
  auto entropy_buffer = ctx.template allocate<acc>(slots);
  auto grad_lp_buffer = ctx.template allocate<acc>(slots);
  auto grad_entropy_buffer = ctx.template allocate<acc>(slots);
  auto lp = detail::token_buffer_view(layout, lp_buffer.data());
  auto entropy = detail::token_buffer_view(layout, entropy_buffer.data());
  auto grad_lp = detail::token_buffer_view(layout, grad_lp_buffer.data());
  auto grad_entropy = detail::token_buffer_view(layout, grad_entropy_buffer.data());

  token_log_probs(layout, logits, token_ids, lp, entropy, logits_opts, ctx);
  const policy_inputs<decltype(lp), Old, Adv, Ref, decltype(entropy)> inputs{
      lp, old_log_probs, advantages, ref_log_probs, entropy};
  const objective_result result =
      policy_objective(layout, inputs, grad_lp, grad_entropy, options, ctx);
  token_log_probs_backward(layout, logits, token_ids, grad_lp, grad_entropy, grad_logits_out,
                           logits_opts, ctx);
  return result;
}

/// The GRPO loss (DeepSeekMath eq. 3, negated; grpo.hpp) from logits:
///   loss = grpo_objective(layout, lp, old_log_probs, ref_log_probs, advantages).loss
/// with lp = token_log_probs(logits / tau, token_ids), and grad_logits_out = d loss / d logits
///   = (d loss / d lp) (onehot(id) - softmax(logits / tau)) / tau   per valid token row.
/// Defaults: grpo_options (eps 0.2, beta 0.04, k3, seq-mean-token-mean), tau = 1, overwrite.
template <batch_layout Layout, matrix_like Logits, class TokenIds, class Old, class Ref, class Adv,
          class GradLogits>
requires token_tensor_for<const TokenIds, Layout> && mutable_matrix_like<GradLogits>
    objective_result
    grpo_loss_from_logits(const Layout& layout, const Logits& logits, const TokenIds& token_ids,
                          const Old& old_log_probs, const Ref& ref_log_probs, const Adv& advantages,
                          GradLogits&& grad_logits_out, const grpo_options& options = {},
                          const logits_options& logits_opts = {},
                          const execution_context<typename Layout::space>& ctx = {}) {
  return policy_loss_from_logits(layout, logits, token_ids, old_log_probs, advantages,
                                 ref_log_probs, grad_logits_out, options.as_policy_options(),
                                 logits_opts, ctx);
}

} // namespace rlcore

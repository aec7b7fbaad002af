// The fused policy objective: policy loss (any form) + beta * KL penalty - coef * entropy, times
// the aggregation weight, with d loss / d lp, d loss / d entropy and the metrics from one pass.
//
// Shapes: every per-token argument is N x T for a padded layout or offsets[N] flat for a packed
// one (bound with layout.bind, so both work). Masked token slots get exactly 0 gradient (a select:
// their inputs may be huge, inf or NaN).
//
// Per valid token (i, t), with delta = clamp(lp - old, -c, c) and w = the aggregation weight:
//   loss += w * [ iw * keep * l_policy + beta * KL(lp - ref) - coef * H ]
// where iw is the rollout importance weight (a constant; 1 when off), keep the entropy-mask
// indicator (1 when off), l_policy the chosen form (math/surrogate.hpp). Sequence forms (GSPO
// sequence level, GMPO) give every valid token of row i the row's loss l_i, so the row contributes
// w_i * iw * (sum_t keep) * l_i and the gradient of l_i flows to every token of the row.
// Gradient conventions: clip ties take the unclipped gradient; a log-ratio clamp (or KL output
// clamp) that is active zeroes the gradient through it, as torch.clamp does.
#pragma once

#include "../backend/host/execution.hpp"
#include "../error.hpp"
#include "../execution.hpp"
#include "../math/functions.hpp"
#include "../tensor/layout.hpp"
#include "aggregate.hpp"
#include "detail/policy_pass.hpp"
#include "detail/token_args.hpp"
#include "metrics.hpp"
#include "policy_options.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace rlcore {

/// The per-token inputs of policy_objective. The optional ones default to `rlcore::none`:
///   ref_log_probs       needed when kl_beta > 0 (KL metric computed whenever given)
///   entropy             needed when entropy_coef != 0 or entropy_top_fraction < 1
///   rollout_log_probs   needed when importance.level != none
/// Holds references: build it in the call, e.g.
///   policy_objective(layout, policy_inputs{.log_probs = lp, .old_log_probs = old,
///                    .advantages = adv, .ref_log_probs = ref}, grad, none, options);
template <class LogProbs, class OldLogProbs, class Advantages, class RefLogProbs = no_tensor,
          class Entropy = no_tensor, class RolloutLogProbs = no_tensor>
struct policy_inputs {
  const LogProbs& log_probs;
  const OldLogProbs& old_log_probs;
  const Advantages& advantages;
  const RefLogProbs& ref_log_probs = none;
  const Entropy& entropy = none;
  const RolloutLogProbs& rollout_log_probs = none;
};

namespace detail {

inline void require_range(bool ok, const char* function, const char* argument, const char* what,
                          double got) {
  require(ok, function, argument, "expected ", what, ", got ", got);
}

/// Checks the options (and which optional inputs they need).
inline void validate_policy_options(const char* function, const policy_options& o, bool has_ref,
                                    bool has_entropy, bool has_rollout, bool has_grad_entropy,
                                    index_t rows) {
  const int loss = static_cast<int>(o.loss);
  require(loss >= 0 && loss <= static_cast<int>(policy_loss::reinforce), function, "options.loss",
          "expected an rlcore::policy_loss value, got ", loss);
  require_range(o.eps_low >= 0 && o.eps_low <= 1, function, "options.eps_low", "0 <= eps_low <= 1",
                o.eps_low);
  require_range(o.eps_high >= 0 && std::isfinite(o.eps_high), function, "options.eps_high",
                "finite eps_high >= 0", o.eps_high);
  require_range(o.dual_clip == 0 || o.dual_clip > 1, function, "options.dual_clip",
                "0 (off) or a constant > 1", o.dual_clip);
  require_range(o.delta_clip == 0 || o.delta_clip > 1, function, "options.delta_clip",
                "0 (off) or a constant > 1", o.delta_clip);
  require_range(o.gspo_eps_low >= 0 && o.gspo_eps_low <= 1, function, "options.gspo_eps_low",
                "0 <= gspo_eps_low <= 1", o.gspo_eps_low);
  require_range(o.gspo_eps_high >= 0 && std::isfinite(o.gspo_eps_high), function,
                "options.gspo_eps_high", "finite gspo_eps_high >= 0", o.gspo_eps_high);
  require_range(o.gmpo_eps_low >= 0 && std::isfinite(o.gmpo_eps_low), function,
                "options.gmpo_eps_low", "finite gmpo_eps_low >= 0", o.gmpo_eps_low);
  require_range(o.gmpo_eps_high >= 0 && std::isfinite(o.gmpo_eps_high), function,
                "options.gmpo_eps_high", "finite gmpo_eps_high >= 0", o.gmpo_eps_high);
  require_range(o.sapo_tau_pos > 0 && std::isfinite(o.sapo_tau_pos), function,
                "options.sapo_tau_pos", "finite tau > 0", o.sapo_tau_pos);
  require_range(o.sapo_tau_neg > 0 && std::isfinite(o.sapo_tau_neg), function,
                "options.sapo_tau_neg", "finite tau > 0", o.sapo_tau_neg);
  require_range(o.log_ratio_clamp > 0 && o.log_ratio_clamp <= 80, function,
                "options.log_ratio_clamp", "0 < clamp <= 80 (exp must stay finite in float)",
                o.log_ratio_clamp);
  const int kl = static_cast<int>(o.kl);
  require(kl >= 0 && kl <= static_cast<int>(kl_estimator::k3_importance), function, "options.kl",
          "expected an rlcore::kl_estimator value, got ", kl);
  require_range(o.kl_beta >= 0 && std::isfinite(o.kl_beta), function, "options.kl_beta",
                "finite beta >= 0", o.kl_beta);
  require(!o.kl_output_clamp || o.kl_output_min <= o.kl_output_max, function,
          "options.kl_output_min", "expected kl_output_min <= kl_output_max, got ", o.kl_output_min,
          " > ", o.kl_output_max);
  require(o.kl_beta == 0 || has_ref, function, "ref_log_probs",
          "expected ref_log_probs when kl_beta > 0 (got none, kl_beta = ", o.kl_beta, ")");
  require_range(std::isfinite(o.entropy_coef), function, "options.entropy_coef",
                "a finite coefficient", o.entropy_coef);
  require(o.entropy_coef == 0 || has_entropy, function, "entropy",
          "expected entropy when entropy_coef != 0 (got none, entropy_coef = ", o.entropy_coef,
          ")");
  require_range(o.entropy_top_fraction > 0 && o.entropy_top_fraction <= 1, function,
                "options.entropy_top_fraction", "0 < fraction <= 1", o.entropy_top_fraction);
  require(o.entropy_top_fraction == 1 || has_entropy, function, "entropy",
          "expected entropy when entropy_top_fraction < 1 (got none)");
  require(!has_grad_entropy || has_entropy, function, "grad_entropy_out",
          "expected no grad_entropy_out without an entropy input, got a tensor");
  const importance_correction_options& is = o.importance;
  const int level = static_cast<int>(is.level);
  require(level >= 0 && level <= static_cast<int>(importance_level::sequence), function,
          "options.importance.level", "expected an rlcore::importance_level value, got ", level);
  require(is.level == importance_level::none || has_rollout, function, "rollout_log_probs",
          "expected rollout_log_probs when importance.level != none (got none)");
  require_range(is.cap > 0, function, "options.importance.cap", "cap > 0", is.cap);
  require_range(is.low >= 0, function, "options.importance.low", "low >= 0", is.low);
  require(is.high >= is.low, function, "options.importance.high", "expected high >= low = ", is.low,
          ", got ", is.high);
  validate_aggregation_options(function, o.aggregation, rows);
}

/// Writes the valid values of a bound per-token view into `out` (one slot per token slot; NaN
/// for masked ones) in the context's memory.
template <class T, class Layout, class View>
struct gather_token_values {
  Layout layout;
  View values;
  T* out;
  RLCORE_HD void operator()(index_t i, index_t t) const {
    index_t flat = 0;
    if constexpr (Layout::is_packed) {
      flat = layout.row_begin(i) + t;
    } else {
      flat = i * layout.cols() + t;
    }
    out[flat] = layout.valid(i, t) ? T(values(i, t)) : T(NAN);
  }
};

/// The q-quantile of the valid values of a per-token view, linear interpolation between order
/// statistics as torch.quantile (0 when no token is valid).
template <class T, class Layout, class View, class Space>
double valid_token_quantile(const Layout& layout, const View& values, double q,
                            const execution_context<Space>& ctx) {
  const index_t slots = layout.token_slots();
  auto buffer = ctx.template allocate<T>(slots);
  ctx.for_each_token(layout, gather_token_values<T, Layout, View>{layout, values, buffer.data()});
  std::vector<T> host(static_cast<size_t>(slots));
  ctx.copy_to_host(buffer.data(), slots, host.data());
  std::vector<double> valid;
  valid.reserve(host.size());
  for (T x : host) {
    if (!std::isnan(x)) {
      valid.push_back(double(x));
    }
  }
  if (valid.empty()) {
    return 0.0;
  }
  std::sort(valid.begin(), valid.end());
  const double position = q * double(valid.size() - 1);
  const auto below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, valid.size() - 1);
  return valid[below] + (position - double(below)) * (valid[above] - valid[below]);
}

template <class T>
policy_params<T> make_policy_params(const policy_options& o) {
  policy_params<T> p{};
  p.loss = o.loss;
  p.gspo = o.gspo;
  p.eps_low = T(o.eps_low);
  p.eps_high = T(o.eps_high);
  p.dual_clip = T(o.dual_clip);
  p.delta_clip = T(o.delta_clip);
  p.gspo_eps_low = T(o.gspo_eps_low);
  p.gspo_eps_high = T(o.gspo_eps_high);
  p.gmpo_eps_low = T(o.gmpo_eps_low);
  p.gmpo_eps_high = T(o.gmpo_eps_high);
  p.sapo_tau_pos = T(o.sapo_tau_pos);
  p.sapo_tau_neg = T(o.sapo_tau_neg);
  p.clamp = T(o.log_ratio_clamp);
  p.kl = o.kl;
  p.kl_beta = T(o.kl_beta);
  p.kl_output_clamp = o.kl_output_clamp;
  p.kl_output_min = T(o.kl_output_min);
  p.kl_output_max = T(o.kl_output_max);
  p.entropy_coef = T(o.entropy_coef);
  p.entropy_mask = o.entropy_top_fraction < 1;
  p.entropy_threshold = T(0);
  p.is_level = o.importance.level;
  p.is_mode = o.importance.mode;
  p.is_cap = T(o.importance.cap);
  p.is_low = T(o.importance.low);
  p.is_high = T(o.importance.high);
  p.row_stats_needed = false;
  p.row_counts_only = false;
  return p;
}

/// The fused objective over bound views (shared by every public overload and backend).
template <class Layout, class Views, class Grad, class GradEntropy, class Space>
objective_result run_policy_objective(const char* function, const Layout& layout,
                                      const Views& views, const Grad& grad,
                                      const GradEntropy& grad_entropy, const policy_options& o,
                                      const execution_context<Space>& ctx) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(views.log_probs(0, 0))>>;
  static_assert(real_scalar<T>, "rlcore::policy_objective: log_probs must be float or double");
  policy_params<T> p = make_policy_params<T>(o);
  constexpr bool has_entropy = is_present<decltype(views.entropy)>;
  if constexpr (has_entropy) {
    if (p.entropy_mask) {
      p.entropy_threshold =
          T(valid_token_quantile<T>(layout, views.entropy, 1.0 - o.entropy_top_fraction, ctx));
    }
  }
  const aggregation_weights weights = prepare_aggregation(function, o.aggregation, layout, ctx);
  p.weights = weights;
  p.row_stats_needed = weights.divide_by_row_count || o.loss == policy_loss::gspo
                       || o.loss == policy_loss::gmpo
                       || o.importance.level == importance_level::sequence;
  p.row_counts_only = o.loss != policy_loss::gspo && o.loss != policy_loss::gmpo
                      && o.importance.level != importance_level::sequence;
  auto row_stats = ctx.template allocate<policy_row_stats>(p.row_stats_needed ? layout.rows() : 0);
  using token_pass_type = policy_token_pass<T, Layout, Views, Grad, GradEntropy>;
  token_pass_type token_pass{layout,       views, grad,
                             grad_entropy, p,     p.row_stats_needed ? row_stats.data() : nullptr};
  if (p.row_stats_needed) {
    bool counted_in_token_pass = false;
    if constexpr (
        std::is_same_v<
            Space, host_space> && host_chunked_token_functor<token_pass_type, policy_token_sums>) {
      // the host's chunked token pass counts each row's mask itself right before the row's
      // chunks (the same counts): no separate pass over the mask
      if (p.row_counts_only && token_pass.host_chunk_enabled()) {
        token_pass.p.host_row_counts = row_stats.data();
        counted_in_token_pass = true;
      }
    }
    if (!counted_in_token_pass) {
      ctx.reduce_rows(layout, row_stats.data(),
                      policy_row_pass<T, Layout, Views>{layout, views, p});
    }
  }
  const policy_token_sums sums = ctx.reduce_tokens(layout, policy_token_sums{}, token_pass);
  check_global_tokens(function, o.aggregation, sums.valid);
  return finish_policy_metrics(sums, has_entropy);
}

} // namespace detail

/// Fused policy objective with every input (see the header comment for the formula).
///   layout              padded or packed batch layout (N sequences)
///   inputs              policy_inputs{log_probs, old_log_probs, advantages [, ref_log_probs]
///                       [, entropy] [, rollout_log_probs]}, per-token, float or double
///   grad_log_probs_out  per-token output: d loss / d lp (0 at masked slots)
///   grad_entropy_out    per-token output d loss / d entropy = -coef * w (for the logits
///                       backward to chain), or rlcore::none
///   options             policy_options (loss form, clips, KL, entropy, IS correction, aggregation)
/// Returns objective_result{loss, metrics}. Throws rlcore::invalid_argument on a shape mismatch,
/// an option out of range, or a missing optional input that the options need.
template <batch_layout Layout, class LP, class Old, class Adv, class Ref, class Ent, class Roll,
          class Grad, class GradEntropy, memory_space Space = typename Layout::space>
objective_result
policy_objective(const Layout& layout, const policy_inputs<LP, Old, Adv, Ref, Ent, Roll>& inputs,
                 Grad&& grad_log_probs_out, GradEntropy&& grad_entropy_out,
                 const policy_options& options = {}, const execution_context<Space>& ctx = {}) {
  constexpr const char* function = "policy_objective";
  auto views = detail::policy_views<
      decltype(layout.bind(function, "", inputs.log_probs)),
      decltype(layout.bind(function, "", inputs.old_log_probs)),
      decltype(layout.bind(function, "", inputs.advantages)),
      decltype(detail::bind_optional(layout, function, "", inputs.ref_log_probs)),
      decltype(detail::bind_optional(layout, function, "", inputs.entropy)),
      decltype(detail::bind_optional(layout, function, "", inputs.rollout_log_probs))>{
      layout.bind(function, "log_probs", inputs.log_probs),
      layout.bind(function, "old_log_probs", inputs.old_log_probs),
      layout.bind(function, "advantages", inputs.advantages),
      detail::bind_optional(layout, function, "ref_log_probs", inputs.ref_log_probs),
      detail::bind_optional(layout, function, "entropy", inputs.entropy),
      detail::bind_optional(layout, function, "rollout_log_probs", inputs.rollout_log_probs)};
  auto grad = layout.bind(function, "grad_log_probs_out", grad_log_probs_out);
  auto grad_entropy = detail::bind_optional(layout, function, "grad_entropy_out", grad_entropy_out);
  detail::validate_policy_options(function, options,
                                  detail::is_present<decltype(views.ref_log_probs)>,
                                  detail::is_present<decltype(views.entropy)>,
                                  detail::is_present<decltype(views.rollout_log_probs)>,
                                  detail::is_present<decltype(grad_entropy)>, layout.rows());
  return detail::run_policy_objective(function, layout, views, grad, grad_entropy, options, ctx);
}

/// Policy objective without KL, entropy or importance correction inputs:
///   loss = aggregate(l_policy(lp, old, A)), grad_log_probs_out = d loss / d lp.
/// Shapes, options and errors as the policy_inputs overload.
template <batch_layout Layout, class LP, class Old, class Adv, class Grad,
          memory_space Space = typename Layout::space>
requires token_tensor_for<const LP, Layout> && token_tensor_for<
    const Old,
    Layout> && token_tensor_for<const Adv,
                                Layout> && mutable_token_tensor_for<std::remove_reference_t<Grad>,
                                                                    Layout>
    objective_result policy_objective(const Layout& layout, const LP& log_probs,
                                      const Old& old_log_probs, const Adv& advantages,
                                      Grad&& grad_log_probs_out, const policy_options& options = {},
                                      const execution_context<Space>& ctx = {}) {
  return policy_objective(layout, policy_inputs<LP, Old, Adv>{log_probs, old_log_probs, advantages},
                          grad_log_probs_out, none, options, ctx);
}

} // namespace rlcore

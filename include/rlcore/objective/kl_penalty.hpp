// KL penalty as a standalone loss, and KL in the reward (PPO style).
//
//   kl_penalty_loss       loss = aggregate(KL(lp, ref)), grad_log_probs_out = d loss / d lp
//   apply_kl_to_rewards   r[i, t] -= beta * KL(lp, ref) at valid tokens (no gradient)
//
// Estimators and the clamp conventions are those of math/kl.hpp.
#pragma once

#include "../backend/host/execution.hpp"
#include "../error.hpp"
#include "../execution.hpp"
#include "../math/kl.hpp"
#include "../tensor/layout.hpp"
#include "aggregate.hpp"
#include "detail/token_args.hpp"
#include "metrics.hpp"

#include <cmath>
#include <type_traits>

namespace rlcore {

/// Options of kl_penalty_loss and apply_kl_to_rewards.
struct kl_penalty_options {
  kl_estimator estimator = kl_estimator::k3;
  double log_ratio_clamp = 20; ///< lp - ref (and lp - old) clamped to [-c, c], 0 < c <= 80
  bool output_clamp = false;   ///< clamp the KL value to [output_min, output_max] (verl: +-10)
  double output_min = -10;
  double output_max = 10;
  aggregation_options aggregation{}; ///< kl_penalty_loss only
};

/// Result of kl_penalty_loss: the aggregated KL, its mean over valid tokens, the valid count.
struct kl_penalty_result {
  double loss = 0;
  double kl_mean = 0;
  double valid_tokens = 0;
};

namespace detail {

template <class T>
struct kl_params {
  kl_estimator estimator;
  T clamp;
  bool output_clamp;
  T output_min, output_max;

  [[nodiscard]] RLCORE_HD math::value_and_gradient<T> operator()(T lp_minus_ref,
                                                                 T lp_minus_old) const {
    math::value_and_gradient<T> kl =
        math::kl_estimate(estimator, lp_minus_ref, lp_minus_old, clamp);
    return output_clamp ? math::clamp_kl_output(kl, output_min, output_max) : kl;
  }
};

template <class T>
kl_params<T> make_kl_params(const kl_penalty_options& o) {
  return {o.estimator, T(o.log_ratio_clamp), o.output_clamp, T(o.output_min), T(o.output_max)};
}

inline void validate_kl_options(const char* function, const kl_penalty_options& o, bool has_old) {
  const int e = static_cast<int>(o.estimator);
  require(e >= 0 && e <= static_cast<int>(kl_estimator::k3_importance), function,
          "options.estimator", "expected an rlcore::kl_estimator value, got ", e);
  require(o.log_ratio_clamp > 0 && o.log_ratio_clamp <= 80, function, "options.log_ratio_clamp",
          "expected 0 < clamp <= 80, got ", o.log_ratio_clamp);
  require(!o.output_clamp || o.output_min <= o.output_max, function, "options.output_min",
          "expected output_min <= output_max, got ", o.output_min, " > ", o.output_max);
  require(o.estimator != kl_estimator::k3_importance || has_old, function, "old_log_probs",
          "expected old_log_probs for the k3_importance estimator (got none)");
}

/// The sums of the KL token pass.
struct kl_token_sums {
  double loss = 0;
  double kl = 0;
  double valid = 0;
  RLCORE_HD constexpr kl_token_sums& operator+=(const kl_token_sums& o) {
    loss += o.loss;
    kl += o.kl;
    valid += o.valid;
    return *this;
  }
};

template <class T, class Layout, class LP, class Old, class Ref, class Grad>
struct kl_loss_token_pass {
  Layout layout;
  LP log_probs;
  Old old_log_probs;
  Ref ref_log_probs;
  Grad grad;
  kl_params<T> kl;
  aggregation_weights weights;
  const double* row_counts; ///< per-row valid counts (seq_mean_token_mean), else null

  RLCORE_HD kl_token_sums operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      grad(i, t) = T(0);
      return {};
    }
    const T lp = T(log_probs(i, t));
    T lp_minus_old = T(0);
    if constexpr (is_present<Old>) {
      lp_minus_old = lp - T(old_log_probs(i, t));
    }
    const math::value_and_gradient<T> k = kl(lp - T(ref_log_probs(i, t)), lp_minus_old);
    const double w = weights.row_weight(row_counts != nullptr ? row_counts[i] : 0.0);
    grad(i, t) = T(w) * k.gradient;
    return {w * double(k.value), double(k.value), 1.0};
  }
};

template <class T, class Layout, class LP, class Ref, class Rewards>
struct kl_reward_token_pass {
  Layout layout;
  LP log_probs;
  Ref ref_log_probs;
  Rewards rewards;
  kl_params<T> kl;
  T beta;

  RLCORE_HD kl_token_sums operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      return {};
    }
    const T lp = T(log_probs(i, t));
    const T value = kl(lp - T(ref_log_probs(i, t)), T(0)).value;
    rewards(i, t) = rewards(i, t) - beta * value;
    return {0.0, double(value), 1.0};
  }
};

template <class Layout, class LPView, class OldView, class RefView, class GradView, class Space>
kl_penalty_result run_kl_penalty_loss(const char* function, const Layout& layout, const LPView& lp,
                                      const OldView& old, const RefView& ref, const GradView& grad,
                                      const kl_penalty_options& options,
                                      const execution_context<Space>& ctx) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(lp(0, 0))>>;
  static_assert(real_scalar<T>, "rlcore::kl_penalty_loss: log_probs must be float or double");
  const aggregation_weights weights =
      prepare_aggregation(function, options.aggregation, layout, ctx);
  auto counts = ctx.template allocate<double>(weights.divide_by_row_count ? layout.rows() : 0);
  if (weights.divide_by_row_count) {
    row_valid_counts(layout, counts.data(), ctx);
  }
  const kl_token_sums sums =
      ctx.reduce_tokens(layout, kl_token_sums{},
                        kl_loss_token_pass<T, Layout, LPView, OldView, RefView, GradView>{
                            layout, lp, old, ref, grad, make_kl_params<T>(options), weights,
                            weights.divide_by_row_count ? counts.data() : nullptr});
  check_global_tokens(function, options.aggregation, sums.valid);
  return {sums.loss, sums.valid > 0 ? sums.kl / sums.valid : 0.0, sums.valid};
}

} // namespace detail

/// Standalone KL penalty loss: loss = aggregate over valid tokens of KL(lp - ref).
///   layout              padded or packed batch layout
///   log_probs, ref_log_probs   per-token, float or double
///   grad_log_probs_out  per-token output: d loss / d lp = w[i, t] * d KL / d lp (0 when masked)
///   options             estimator (k3), log-ratio clamp (20), output clamp (off), aggregation
/// The k3_importance estimator needs old_log_probs: use the overload that takes them.
template <batch_layout Layout, class LP, class Ref, class Grad,
          memory_space Space = typename Layout::space>
requires token_tensor_for<const LP, Layout> && token_tensor_for<
    const Ref, Layout> && mutable_token_tensor_for<std::remove_reference_t<Grad>, Layout>
    kl_penalty_result kl_penalty_loss(const Layout& layout, const LP& log_probs,
                                      const Ref& ref_log_probs, Grad&& grad_log_probs_out,
                                      const kl_penalty_options& options = {},
                                      const execution_context<Space>& ctx = {}) {
  constexpr const char* function = "kl_penalty_loss";
  auto lp = layout.bind(function, "log_probs", log_probs);
  auto ref = layout.bind(function, "ref_log_probs", ref_log_probs);
  auto grad = layout.bind(function, "grad_log_probs_out", grad_log_probs_out);
  detail::validate_kl_options(function, options, false);
  return detail::run_kl_penalty_loss(function, layout, lp, detail::absent_token_view{}, ref, grad,
                                     options, ctx);
}

/// Standalone KL penalty loss with old_log_probs (needed by k3_importance, whose importance ratio
/// is exp(lp - old); ignored by the other estimators). Otherwise as the overload above.
template <batch_layout Layout, class LP, class Old, class Ref, class Grad,
          memory_space Space = typename Layout::space>
requires token_tensor_for<const LP, Layout> && token_tensor_for<
    const Old,
    Layout> && token_tensor_for<const Ref,
                                Layout> && mutable_token_tensor_for<std::remove_reference_t<Grad>,
                                                                    Layout>
    kl_penalty_result kl_penalty_loss(const Layout& layout, const LP& log_probs,
                                      const Old& old_log_probs, const Ref& ref_log_probs,
                                      Grad&& grad_log_probs_out,
                                      const kl_penalty_options& options = {},
                                      const execution_context<Space>& ctx = {}) {
  constexpr const char* function = "kl_penalty_loss";
  auto lp = layout.bind(function, "log_probs", log_probs);
  auto old = layout.bind(function, "old_log_probs", old_log_probs);
  auto ref = layout.bind(function, "ref_log_probs", ref_log_probs);
  auto grad = layout.bind(function, "grad_log_probs_out", grad_log_probs_out);
  detail::validate_kl_options(function, options, true);
  return detail::run_kl_penalty_loss(function, layout, lp, old, ref, grad, options, ctx);
}

/// KL in the reward (PPO style): token_rewards_inout[i, t] -= beta * KL(lp - ref) at every valid
/// token; masked slots are left untouched. No gradient (rewards are constants).
///   beta >= 0, estimator any except k3_importance (which needs old log-probs).
/// Returns the mean KL over valid tokens (0 when none), e.g. to feed an adaptive_kl_controller.
template <batch_layout Layout, class Rewards, class LP, class Ref,
          memory_space Space = typename Layout::space>
requires mutable_token_tensor_for<std::remove_reference_t<Rewards>, Layout> && token_tensor_for<
    const LP, Layout> && token_tensor_for<const Ref, Layout>
double apply_kl_to_rewards(const Layout& layout, Rewards&& token_rewards_inout, const LP& log_probs,
                           const Ref& ref_log_probs, double beta,
                           kl_estimator estimator = kl_estimator::k1,
                           const kl_penalty_options& clamp_options = {},
                           const execution_context<Space>& ctx = {}) {
  constexpr const char* function = "apply_kl_to_rewards";
  auto rewards = layout.bind(function, "token_rewards_inout", token_rewards_inout);
  auto lp = layout.bind(function, "log_probs", log_probs);
  auto ref = layout.bind(function, "ref_log_probs", ref_log_probs);
  detail::require(beta >= 0 && std::isfinite(beta), function, "beta",
                  "expected finite beta >= 0, got ", beta);
  kl_penalty_options options = clamp_options;
  options.estimator = estimator;
  detail::require(estimator != kl_estimator::k3_importance, function, "estimator",
                  "expected an estimator without importance ratio, got k3_importance");
  detail::validate_kl_options(function, options, false);
  using T = std::remove_cv_t<std::remove_reference_t<decltype(rewards(0, 0))>>;
  static_assert(real_scalar<T>, "rlcore::apply_kl_to_rewards: rewards must be float or double");
  const detail::kl_token_sums sums = ctx.reduce_tokens(
      layout, detail::kl_token_sums{},
      detail::kl_reward_token_pass<T, Layout, decltype(lp), decltype(ref), decltype(rewards)>{
          layout, lp, ref, rewards, detail::make_kl_params<T>(options), T(beta)});
  return sums.valid > 0 ? sums.kl / sums.valid : 0.0;
}

} // namespace rlcore

// Generalised advantage estimation (Schulman et al. 2016) for PPO, with multi-turn masks.
#pragma once

#include "../math/advantage.hpp"
#include "common.hpp"
#include "whiten.hpp"

#include <type_traits>

namespace rlcore {

/// Options of gae_advantages.
struct gae_options {
  double gamma = 1.0;  ///< discount, in [0, 1]
  double lambda = 1.0; ///< GAE lambda, in [0, 1]
  bool whiten = false; ///< whiten the advantages after computing the returns (verl always does)
  rlcore::whiten_kind whiten_kind = rlcore::whiten_kind::unbiased; ///< used when whiten is set
  double whiten_eps = 1e-8;                                        ///< > 0
};

namespace detail {

/// GAE's scan element: token t as a segment map (math::gae_fold_token of the identity): a valid
/// token is (1, V_t, r_t - V_t), a masked one the identity (its reward and value are not read).
template <class Layout, class Rewards, class Values>
struct gae_token_map {
  Layout layout;
  Rewards rewards;
  Values values;
  double gamma;
  double gamma_lambda;
  RLCORE_HD math::gae_segment_map<double> operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      return {};
    }
    return math::gae_fold_token(math::gae_segment_map<double>{}, true, gamma, gamma_lambda,
                                static_cast<double>(rewards(i, t)),
                                static_cast<double>(values(i, t)));
  }
};

/// GAE's scan combine: the segment `earlier` in front of the segment `later` (math::gae_then),
/// with the power (gamma lambda)^(earlier.count - 1) by math::gae_power.
struct gae_then_op {
  double gamma;
  double gamma_lambda;
  RLCORE_HD math::gae_segment_map<double>
  operator()(const math::gae_segment_map<double>& later,
             const math::gae_segment_map<double>& earlier) const {
    const double power = earlier.count > 1 ? math::gae_power(gamma_lambda, earlier.count - 1) : 1.0;
    return math::gae_then(later, earlier, gamma, gamma_lambda, power);
  }
};

/// Writes A_t and A_t + V_t from the inclusive map of token t (the composite of t .. len - 1
/// applied to the carry (0, 0): its value is V_t and its advantage A_t at a valid token); 0 at
/// masked tokens.
template <class Layout, class Advantages, class Returns>
struct gae_write {
  Layout layout;
  Advantages advantages;
  Returns returns;
  RLCORE_HD void operator()(index_t i, index_t t, const math::gae_segment_map<double>&,
                            const math::gae_segment_map<double>& inclusive) const {
    using A = typename Advantages::value_type;
    using R = typename Returns::value_type;
    const bool valid = layout.valid(i, t);
    advantages(i, t) = valid ? static_cast<A>(inclusive.advantage) : A(0);
    returns(i, t) = valid ? static_cast<R>(inclusive.advantage + inclusive.value) : R(0);
  }
};

} // namespace detail

/// GAE advantages and returns, backwards over the valid tokens of each row:
///   delta_t = r_t + gamma * V_next - V_t,   A_t = delta_t + gamma * lambda * A_next,
///   returns_t = A_t + V_t,
/// where V_next / A_next belong to the next *valid* token of the row (0 past the last one). At a
/// masked token (multi-turn observation) both carries pass unchanged, so masked tokens are skipped,
/// not treated as ends; masked outputs are 0 and masked rewards/values are never read into a
/// result. Computed as ONE reverse scan per row (ctx.reverse_scan_rows, an associative scan on the
/// GPU) over the maps of segments of the row on the carry (V_next, A_next): math::gae_segment_map
/// (count, V, A), composed by math::gae_then; no scratch memory; carries in double, so results
/// agree with the plain recurrence within double rounding (the scan associates the same sums in
/// another order). With whiten, advantages are then whitened over the valid tokens
/// (returns keep the unwhitened A + V).
/// Shapes: token_rewards, values, advantages_out, returns_out per-token for the layout.
/// Options: gamma = 1, lambda = 1 (both in [0, 1]), whiten = false, whiten_kind = unbiased,
/// whiten_eps = 1e-8. verl: whiten = true (unbiased; its masked outputs hold the carry instead of
/// 0). TRL PPO: whiten = true (unbiased). OpenRLHF: whiten = true, population (var clamped at
/// 1e-8 instead of + 1e-8), and it zeroes r and V at masked tokens instead of skipping them, so
/// it matches only without interior masks.
template <batch_layout Layout, class Rewards, class Values, class Advantages, class Returns>
requires token_tensor_for<const Rewards, Layout> && token_tensor_for<
    const Values,
    Layout> && mutable_token_tensor_for<std::remove_reference_t<Advantages>,
                                        Layout> && mutable_token_tensor_for<std::
                                                                                remove_reference_t<
                                                                                    Returns>,
                                                                            Layout>
void gae_advantages(const Layout& layout, const Rewards& token_rewards, const Values& values,
                    Advantages&& advantages_out, Returns&& returns_out,
                    const gae_options& options = {}, const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "gae_advantages";
  detail::require_unit_interval(function, "options.gamma", options.gamma);
  detail::require_unit_interval(function, "options.lambda", options.lambda);
  detail::validate_whiten(function, "options.whiten_kind", "options.whiten_eps",
                          options.whiten_kind, options.whiten_eps);
  const auto r = layout.bind(function, "token_rewards", token_rewards);
  const auto v = layout.bind(function, "values", values);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  const auto ret = layout.bind(function, "returns_out", returns_out);
  const double gamma_lambda = options.gamma * options.lambda;
  ctx.reverse_scan_rows(layout, math::gae_segment_map<double>{},
                        detail::gae_token_map<Layout, decltype(r), decltype(v)>{
                            layout, r, v, options.gamma, gamma_lambda},
                        detail::gae_then_op{options.gamma, gamma_lambda},
                        detail::gae_write<Layout, decltype(a), decltype(ret)>{layout, a, ret});
  if (options.whiten) {
    detail::whiten_tokens(function, "options.whiten_kind", layout, a, a, options.whiten_kind,
                          options.whiten_eps, ctx);
  }
}

} // namespace rlcore

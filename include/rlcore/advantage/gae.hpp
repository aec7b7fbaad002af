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

/// GAE's scan element: token t as a map of the one-number carry (math::gae_carry_fold_token of
/// the identity): a valid token is (gamma lambda, V_t + lambda (r_t - V_t)), a masked one the
/// identity (its reward and value are not read).
template <class Layout, class Rewards, class Values>
struct gae_token_carry_map {
  Layout layout;
  Rewards rewards;
  Values values;
  double gamma;
  double lambda;
  RLCORE_HD math::gae_carry_map<double> operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      return {};
    }
    return math::gae_carry_fold_token(math::gae_carry_map<double>{}, true, gamma, lambda,
                                      gamma * lambda, static_cast<double>(rewards(i, t)),
                                      static_cast<double>(values(i, t)));
  }
};

/// GAE's scan combine: the segment `earlier` in front of the segment `later`
/// (math::gae_carry_then).
struct gae_carry_then_op {
  RLCORE_HD math::gae_carry_map<double>
  operator()(const math::gae_carry_map<double>& later,
             const math::gae_carry_map<double>& earlier) const {
    return math::gae_carry_then(later, earlier);
  }
};

/// Writes A_t = (r_t - V_t) + gamma c_next (math::gae_advantage_from_carry, c_next the offset of
/// the exclusive map: the composite of t + 1 .. len - 1 applied to the carry 0) and A_t + V_t;
/// 0 at masked tokens.
template <class Layout, class Rewards, class Values, class Advantages, class Returns>
struct gae_write {
  Layout layout;
  Rewards rewards;
  Values values;
  Advantages advantages;
  Returns returns;
  double gamma;
  RLCORE_HD void operator()(index_t i, index_t t, const math::gae_carry_map<double>& exclusive,
                            const math::gae_carry_map<double>&) const {
    using A = typename Advantages::value_type;
    using R = typename Returns::value_type;
    if (!layout.valid(i, t)) {
      advantages(i, t) = A(0);
      returns(i, t) = R(0);
      return;
    }
    const double value = static_cast<double>(values(i, t));
    const double advantage = math::gae_advantage_from_carry(
        gamma, static_cast<double>(rewards(i, t)), value, exclusive.offset);
    advantages(i, t) = static_cast<A>(advantage);
    returns(i, t) = static_cast<R>(advantage + value);
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
/// GPU) of affine maps of the one-number carry c_t = V_t + lambda A_t, with A_t = (r_t - V_t) +
/// gamma c_next (math::gae_carry_map, composed by math::gae_carry_then; the fused CUDA kernel
/// scans the same maps); no scratch memory; carries in double, so results agree with the plain
/// recurrence within double rounding (the scan associates the same sums in another order). With
/// whiten, advantages are then whitened over the valid tokens (returns keep the unwhitened A + V).
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
  ctx.reverse_scan_rows(
      layout, math::gae_carry_map<double>{},
      detail::gae_token_carry_map<Layout, decltype(r), decltype(v)>{layout, r, v, options.gamma,
                                                                    options.lambda},
      detail::gae_carry_then_op{},
      detail::gae_write<Layout, decltype(r), decltype(v), decltype(a), decltype(ret)>{
          layout, r, v, a, ret, options.gamma});
  if (options.whiten) {
    detail::whiten_tokens(function, "options.whiten_kind", layout, a, a, options.whiten_kind,
                          options.whiten_eps, ctx);
  }
}

} // namespace rlcore

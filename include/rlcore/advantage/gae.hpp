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

/// Scan coefficients: the next valid token's value.
template <class Layout, class Values>
struct next_value_coefficients {
  Layout layout;
  Values values;
  RLCORE_HD math::affine_step operator()(index_t i, index_t t) const {
    return math::next_value_step(layout.valid(i, t), static_cast<double>(values(i, t)));
  }
};

/// Stores the exclusive carry (value of the next valid token after t) in a token-slot buffer of
/// the values' element type: the carry is a copy of one value (or 0), so the store is exact.
template <class Layout, class V>
struct store_exclusive_carry {
  Layout layout;
  V* slots;
  RLCORE_HD void operator()(index_t i, index_t t, double carry, double) const {
    slots[token_slot(layout, i, t)] = static_cast<V>(carry);
  }
};

template <class Layout, class Rewards, class Values>
struct gae_coefficients {
  Layout layout;
  Rewards rewards;
  Values values;
  const typename Values::value_type* next_values;
  double gamma;
  double lambda;
  RLCORE_HD math::affine_step operator()(index_t i, index_t t) const {
    const bool valid = layout.valid(i, t);
    return valid ? math::gae_step(true, gamma, lambda, static_cast<double>(rewards(i, t)),
                                  static_cast<double>(values(i, t)),
                                  static_cast<double>(next_values[token_slot(layout, i, t)]))
                 : math::gae_step(false, gamma, lambda, 0.0, 0.0, 0.0);
  }
};

template <class Layout, class Values, class Advantages, class Returns>
struct gae_write {
  Layout layout;
  Values values;
  Advantages advantages;
  Returns returns;
  RLCORE_HD void operator()(index_t i, index_t t, double, double advantage) const {
    using A = typename Advantages::value_type;
    using R = typename Returns::value_type;
    const bool valid = layout.valid(i, t);
    advantages(i, t) = valid ? static_cast<A>(advantage) : A(0);
    returns(i, t) = valid ? static_cast<R>(advantage + static_cast<double>(values(i, t))) : R(0);
  }
};

} // namespace detail

/// GAE advantages and returns, backwards over the valid tokens of each row:
///   delta_t = r_t + gamma * V_next - V_t,   A_t = delta_t + gamma * lambda * A_next,
///   returns_t = A_t + V_t,
/// where V_next / A_next belong to the next *valid* token of the row (0 past the last one). At a
/// masked token (multi-turn observation) both carries pass unchanged, so masked tokens are skipped,
/// not treated as ends; masked outputs are 0 and masked rewards/values are never read into a
/// result. Computed as two reverse affine scans (next value, then A), i.e. an associative scan on
/// the GPU; carries in double. With whiten, advantages are then whitened over the valid tokens
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
  using value_t = typename decltype(v)::value_type;
  auto next_values = ctx.template allocate<value_t>(layout.token_slots());
  ctx.reverse_affine_scan_rows(
      layout, detail::next_value_coefficients<Layout, decltype(v)>{layout, v},
      detail::store_exclusive_carry<Layout, value_t>{layout, next_values.data()});
  ctx.reverse_affine_scan_rows(
      layout,
      detail::gae_coefficients<Layout, decltype(r), decltype(v)>{layout, r, v, next_values.data(),
                                                                 options.gamma, options.lambda},
      detail::gae_write<Layout, decltype(v), decltype(a), decltype(ret)>{layout, v, a, ret});
  if (options.whiten) {
    detail::whiten_tokens(function, "options.whiten_kind", layout, a, a, options.whiten_kind,
                          options.whiten_eps, ctx);
  }
}

} // namespace rlcore

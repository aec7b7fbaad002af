// REINFORCE++ (Hu 2025), REINFORCE++ with a group baseline, and ReMax (Li et al. 2024): discounted
// returns-to-go over the valid tokens, optionally minus a per-sequence baseline, then whitening.
#pragma once

#include "../math/advantage.hpp"
#include "../math/stats.hpp"
#include "common.hpp"
#include "scores.hpp"
#include "whiten.hpp"

#include <type_traits>

namespace rlcore {

/// Options of the REINFORCE++ estimators.
struct reinforce_options {
  double gamma = 1.0;                                              ///< discount, in [0, 1]
  rlcore::whiten_kind whiten_kind = rlcore::whiten_kind::unbiased; ///< none skips whitening
  double whiten_eps = 1e-8;                                        ///< > 0
};

/// Options of remax_advantages (verl applies no whitening to ReMax).
struct remax_options {
  double gamma = 1.0; ///< discount, in [0, 1]
  rlcore::whiten_kind whiten_kind = rlcore::whiten_kind::none;
  double whiten_eps = 1e-8; ///< > 0
};

namespace detail {

/// Return-to-go coefficients (no baseline): the affine step of token (i, t).
template <class Layout, class Rewards>
struct return_coefficients {
  Layout layout;
  Rewards rewards;
  double gamma;
  RLCORE_HD math::affine_step operator()(index_t i, index_t t) const {
    const bool valid = layout.valid(i, t);
    return math::discounted_return_step(valid, gamma,
                                        valid ? static_cast<double>(rewards(i, t)) : 0.0);
  }
};

/// out(i, t) = inclusive carry at valid tokens, 0 at masked ones.
template <class Layout, class Out>
struct write_inclusive_carry {
  Layout layout;
  Out out;
  RLCORE_HD void operator()(index_t i, index_t t, double, double value) const {
    using T = typename Out::value_type;
    out(i, t) = layout.valid(i, t) ? static_cast<T>(value) : T(0);
  }
};

/// The return-to-go scan with a terminal baseline as one monoid scan: a segment of a row with at
/// least one valid token is its return map c -> a c + s (a = gamma^valid tokens, s its discounted
/// rewards: math::discounted_return_step composed by affine_then) together with s_end, its
/// discounted rewards with the row's baseline taken from the reward of its last valid token (the
/// carry it makes when nothing valid follows it). A segment without valid tokens is the identity.
struct baseline_return_segment {
  bool any_valid = false;
  affine_map<double> returns; ///< the return map of the segment
  double returns_at_end = 0;  ///< its carry from the row's end, baseline applied
};

/// combine of baseline_return_segment (reverse_scan_rows' order): `earlier` in front of `later`.
/// If `later` has a valid token, the baseline sits in `later`: s_end = a_earlier s_end_later +
/// s_earlier; otherwise `earlier` holds the row's last valid token and keeps its s_end.
struct baseline_return_then {
  RLCORE_HD baseline_return_segment operator()(const baseline_return_segment& later,
                                               const baseline_return_segment& earlier) const {
    if (!earlier.any_valid) {
      return later;
    }
    if (!later.any_valid) {
      return earlier;
    }
    const affine_map<double> later_from_end{later.returns.a, later.returns_at_end};
    return {true, affine_then{}(later.returns, earlier.returns),
            affine_then{}(later_from_end, earlier.returns).b};
  }
};

/// Token (i, t) as a baseline_return_segment: a valid token is (gamma, r) with s_end = r - b_i
/// (the same step with baseline[i] subtracted from its reward).
template <class Layout, class Rewards>
struct baseline_return_token {
  Layout layout;
  Rewards rewards;
  double gamma;
  const double* baseline; ///< N entries
  RLCORE_HD baseline_return_segment operator()(index_t i, index_t t) const {
    if (!layout.valid(i, t)) {
      return {};
    }
    const auto reward = static_cast<double>(rewards(i, t));
    const math::affine_step step = math::discounted_return_step(true, gamma, reward);
    const math::affine_step last = math::discounted_return_step(true, gamma, reward - baseline[i]);
    return {true, {step.first, step.second}, last.second};
  }
};

/// out(i, t) = the return at valid tokens (the inclusive segment's s_end), 0 at masked ones.
template <class Layout, class Out>
struct write_baseline_return {
  Layout layout;
  Out out;
  RLCORE_HD void operator()(index_t i, index_t t, const baseline_return_segment&,
                            const baseline_return_segment& inclusive) const {
    using T = typename Out::value_type;
    out(i, t) = layout.valid(i, t) ? static_cast<T>(inclusive.returns_at_end) : T(0);
  }
};

/// Discounted returns with an optional terminal baseline (baseline[i] subtracted from the reward
/// of row i's last valid token) into the bound tensor `returns`; one reverse scan either way.
template <class Layout, class Rewards, class Returns, class Context>
void discounted_returns(const Layout& layout, const Rewards& rewards, const Returns& returns,
                        double gamma, const double* baseline, const Context& ctx) {
  if (baseline == nullptr) {
    ctx.reverse_affine_scan_rows(layout,
                                 return_coefficients<Layout, Rewards>{layout, rewards, gamma},
                                 write_inclusive_carry<Layout, Returns>{layout, returns});
    return;
  }
  ctx.reverse_scan_rows(layout, baseline_return_segment{},
                        baseline_return_token<Layout, Rewards>{layout, rewards, gamma, baseline},
                        baseline_return_then{},
                        write_baseline_return<Layout, Returns>{layout, returns});
}

/// baseline[k] = mean of the scores of k's group (two-pass, exact for identical scores).
template <class Groups>
struct group_mean_baseline {
  Groups groups;
  const double* scores;
  double* baseline;
  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    const double mean = math::range_moments(begin, end, element_as_double<const double*>{scores},
                                            std_kind::population)
                            .mean;
    for (index_t k = begin; k < end; ++k) {
      baseline[k] = mean;
    }
  }
};

/// baseline[i] = double(values[i]).
template <class Values>
struct copy_to_double {
  Values values;
  double* out;
  RLCORE_HD void operator()(index_t i) const { out[i] = static_cast<double>(values[i]); }
};

template <class Options>
void validate_reinforce_options(const char* function, const Options& options) {
  require_unit_interval(function, "options.gamma", options.gamma);
  validate_whiten(function, "options.whiten_kind", "options.whiten_eps", options.whiten_kind,
                  options.whiten_eps);
}

} // namespace detail

/// REINFORCE++ advantages (Hu 2025, arXiv:2501.03262): the return-to-go over valid tokens
///   G_t = r_t + gamma * G_next     (G_next: the next valid token's return, 0 past the last; the
///                                   carry passes unchanged through masked interior tokens)
/// written to returns_out (0 at masked tokens), then advantages_out = whiten(G) over all valid
/// tokens of the batch (whiten_kind unbiased by default; none: advantages = returns).
/// Shapes: token_rewards, advantages_out, returns_out per-token. Options: gamma = 1,
/// whiten_kind = unbiased, whiten_eps = 1e-8. Errors: gamma outside [0, 1], whiten_eps <= 0, one
/// valid token with unbiased whitening. verl reinforce_plus_plus = defaults, but verl resets the
/// running return at every masked token (so multi-turn observation tokens cut the return).
/// OpenRLHF reinforce = whiten_kind population (var clamped at 1e-8 instead of + 1e-8); it applies
/// gamma at masked tokens too (same result for gamma = 1).
template <batch_layout Layout, class Rewards, class Advantages, class Returns>
requires token_tensor_for<const Rewards, Layout> && mutable_token_tensor_for<
    std::remove_reference_t<Advantages>,
    Layout> && mutable_token_tensor_for<std::remove_reference_t<Returns>, Layout>
void reinforce_plus_plus_advantages(const Layout& layout, const Rewards& token_rewards,
                                    Advantages&& advantages_out, Returns&& returns_out,
                                    const reinforce_options& options = {},
                                    const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "reinforce_plus_plus_advantages";
  detail::validate_reinforce_options(function, options);
  const auto r = layout.bind(function, "token_rewards", token_rewards);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  const auto ret = layout.bind(function, "returns_out", returns_out);
  detail::discounted_returns(layout, r, ret, options.gamma, nullptr, ctx);
  detail::whiten_tokens(function, "options.whiten_kind", layout, ret, a, options.whiten_kind,
                        options.whiten_eps, ctx);
}

/// REINFORCE++-baseline advantages (OpenRLHF "reinforce_baseline"): with s_i = sum of the valid
/// token rewards of sequence i and b_g = mean of s over i's group, the baseline b_g is subtracted
/// from the reward of the *last valid token* of sequence i (where the outcome reward sits), then
///   G_t = r'_t + gamma * G_next     (as in reinforce_plus_plus_advantages), advantages =
///   whiten(G).
/// With gamma = 1 every valid token of sequence i gets (its return-to-go) - b_g; with gamma < 1
/// the baseline is discounted like the reward it offsets. Identical scores in a group cancel
/// exactly. This is OpenRLHF's construction when token_rewards holds only the outcome reward at
/// the last token (OpenRLHF subtracts the group mean of the outcome rewards before adding the
/// per-token KL terms; use a KL loss instead, as it recommends). All-masked rows get 0.
/// Shapes: token_rewards, advantages_out per-token; groups over N sequences.
template <batch_layout Layout, class Rewards, class Groups, class Advantages>
requires token_tensor_for<const Rewards, Layout> && mutable_token_tensor_for<
    std::remove_reference_t<Advantages>, Layout>
void reinforce_plus_plus_baseline_advantages(const Layout& layout, const Rewards& token_rewards,
                                             const Groups& groups, Advantages&& advantages_out,
                                             const reinforce_options& options = {},
                                             const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "reinforce_plus_plus_baseline_advantages";
  detail::validate_reinforce_options(function, options);
  detail::static_check_spaces<typename Layout::space, Groups>();
  const index_t n = layout.rows();
  const index_t num_groups = detail::validate_groups(function, groups, n);
  const auto r = layout.bind(function, "token_rewards", token_rewards);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  auto scores = detail::row_reward_sums(layout, r, ctx);
  auto baseline = ctx.template allocate<double>(n);
  ctx.for_each(num_groups,
               detail::group_mean_baseline<Groups>{groups, scores.data(), baseline.data()});
  detail::discounted_returns(layout, r, a, options.gamma, baseline.data(), ctx);
  detail::whiten_tokens(function, "options.whiten_kind", layout, a, a, options.whiten_kind,
                        options.whiten_eps, ctx);
}

/// ReMax advantages (Li et al. 2024): the given baseline reward b_i of each sequence (the reward of
/// its greedy response) is subtracted from the reward of its last valid token, then the
/// return-to-go G_t = r'_t + gamma * G_next over valid tokens; advantages = G (whiten_kind none,
/// default) or whiten(G). With gamma = 1 this is verl's remax: (sum of rewards from t on) - b_i at
/// every valid token (verl leaves masked tokens nonzero; here they are 0).
/// Shapes: token_rewards, advantages_out per-token; baseline_rewards vector of N.
template <batch_layout Layout, class Rewards, vector_like Baselines, class Advantages>
requires token_tensor_for<const Rewards, Layout> && mutable_token_tensor_for<
    std::remove_reference_t<Advantages>, Layout>
void remax_advantages(const Layout& layout, const Rewards& token_rewards,
                      const Baselines& baseline_rewards, Advantages&& advantages_out,
                      const remax_options& options = {},
                      const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "remax_advantages";
  detail::validate_reinforce_options(function, options);
  const index_t n = layout.rows();
  const auto b = as_vector_view(baseline_rewards);
  detail::static_check_spaces<typename Layout::space, uniform_groups, decltype(b)>();
  detail::require_sequence_count(function, "baseline_rewards", b.size, n);
  const auto r = layout.bind(function, "token_rewards", token_rewards);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  auto baseline = ctx.template allocate<double>(n);
  ctx.for_each(n, detail::copy_to_double<decltype(b)>{b, baseline.data()});
  detail::discounted_returns(layout, r, a, options.gamma, baseline.data(), ctx);
  detail::whiten_tokens(function, "options.whiten_kind", layout, a, a, options.whiten_kind,
                        options.whiten_eps, ctx);
}

} // namespace rlcore

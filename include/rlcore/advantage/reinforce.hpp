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

/// Marks the last valid token of each row in a token-slot buffer (1 there, 0 elsewhere).
template <class Layout>
struct valid_count_coefficients {
  Layout layout;
  RLCORE_HD math::affine_step operator()(index_t i, index_t t) const {
    return math::valid_count_step(layout.valid(i, t));
  }
};
template <class Layout>
struct store_last_valid_flag {
  Layout layout;
  unsigned char* slots;
  RLCORE_HD void operator()(index_t i, index_t t, double valid_after, double) const {
    slots[token_slot(layout, i, t)] = layout.valid(i, t) && valid_after == 0.0 ? 1 : 0;
  }
};

/// Return-to-go coefficients; baseline[i] (if any) is subtracted from the reward of the last
/// valid token of row i.
template <class Layout, class Rewards>
struct return_coefficients {
  Layout layout;
  Rewards rewards;
  double gamma;
  const double* baseline;          ///< N entries, or null
  const unsigned char* last_valid; ///< token slots, or null (with baseline null)
  RLCORE_HD math::affine_step operator()(index_t i, index_t t) const {
    const bool valid = layout.valid(i, t);
    double reward = valid ? static_cast<double>(rewards(i, t)) : 0.0;
    if (baseline != nullptr && valid && last_valid[token_slot(layout, i, t)] != 0) {
      reward -= baseline[i];
    }
    return math::discounted_return_step(valid, gamma, reward);
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

/// Discounted returns with an optional terminal baseline into the bound tensor `returns`.
template <class Layout, class Rewards, class Returns, class Context>
void discounted_returns(const Layout& layout, const Rewards& rewards, const Returns& returns,
                        double gamma, const double* baseline, const Context& ctx) {
  if (baseline == nullptr) {
    ctx.reverse_affine_scan_rows(
        layout, return_coefficients<Layout, Rewards>{layout, rewards, gamma, nullptr, nullptr},
        write_inclusive_carry<Layout, Returns>{layout, returns});
    return;
  }
  auto last_valid = ctx.template allocate<unsigned char>(layout.token_slots());
  ctx.reverse_affine_scan_rows(layout, valid_count_coefficients<Layout>{layout},
                               store_last_valid_flag<Layout>{layout, last_valid.data()});
  ctx.reverse_affine_scan_rows(
      layout,
      return_coefficients<Layout, Rewards>{layout, rewards, gamma, baseline, last_valid.data()},
      write_inclusive_carry<Layout, Returns>{layout, returns});
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

// Sequence scores from per-token rewards: s_i = sum over the valid tokens of row i of r[i, t].
#pragma once

#include "common.hpp"

#include <type_traits>

namespace rlcore {

namespace detail {

/// r(i, t) at a valid token, 0 at a masked one (a select: a masked NaN or inf is never read).
template <class Layout, class Rewards>
struct valid_reward {
  Layout layout;
  Rewards rewards;
  RLCORE_HD double operator()(index_t i, index_t t) const {
    return layout.valid(i, t) ? static_cast<double>(rewards(i, t)) : 0.0;
  }
};

/// out[i] = static_cast<T>(values[i]).
template <class Out, class Values>
struct copy_sequence_values {
  Out out;
  Values values;
  RLCORE_HD void operator()(index_t i) const {
    out[i] = static_cast<typename Out::value_type>(values[i]);
  }
};

/// Per-row sums of the valid rewards into a double buffer of N entries (returned).
template <class Layout, class Rewards, class Context>
auto row_reward_sums(const Layout& layout, const Rewards& rewards, const Context& ctx) {
  auto sums = ctx.template allocate<double>(layout.rows());
  ctx.reduce_rows(layout, sums.data(), valid_reward<Layout, Rewards>{layout, rewards});
  return sums;
}

} // namespace detail

/// Sequence scores s_i = sum_t m[i, t] r[i, t] (masked tokens are skipped, not multiplied), summed
/// in double. Shapes: token_rewards per-token for the layout; scores_out vector of N.
/// An all-masked row scores 0.
template <batch_layout Layout, class Rewards, class Scores>
requires token_tensor_for<const Rewards,
                          Layout> && mutable_vector_like<std::remove_reference_t<Scores>>
void sequence_scores(const Layout& layout, const Rewards& token_rewards, Scores&& scores_out,
                     const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "sequence_scores";
  const auto rewards = layout.bind(function, "token_rewards", token_rewards);
  const auto out = as_vector_view(scores_out);
  detail::static_check_spaces<typename Layout::space, uniform_groups, decltype(out)>();
  detail::require_sequence_count(function, "scores_out", out.size, layout.rows());
  auto sums = detail::row_reward_sums(layout, rewards, ctx);
  const vector_view<const double, typename Layout::space> sum_view{sums.data(), layout.rows(), 1};
  ctx.for_each(layout.rows(),
               detail::copy_sequence_values<decltype(out), decltype(sum_view)>{out, sum_view});
}

} // namespace rlcore

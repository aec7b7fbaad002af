// Reward utilities: combining several reward columns (weighted sum; GDPO's normalise-each-then-
// sum), the missing-reward (NaN) policy, DAPO's overlong shaping, the zero-spread group filter of
// dynamic sampling and the truncated-response mask.
//
// Shapes: reward columns are an N x K matrix_like (one row per sequence, one column per reward);
// weights a vector of K; per-sequence vectors hold N entries.
#pragma once

#include "../math/advantage.hpp"
#include "../math/stats.hpp"
#include "common.hpp"

#include <type_traits>

namespace rlcore {

/// What a missing reward (NaN) in a reward column does.
enum class nan_policy {
  error,      ///< rlcore::invalid_argument naming reward_columns (default)
  skip_column ///< that column is skipped for that sequence (contributes nothing)
};

/// Options of weighted_reward_sum.
struct reward_sum_options {
  rlcore::nan_policy nan_policy = rlcore::nan_policy::error;
};

/// Options of normalized_reward_sum (GDPO).
struct normalized_reward_sum_options {
  rlcore::std_kind std_kind = rlcore::std_kind::unbiased;
  double eps = 1e-6;           ///< added to every std (> 0)
  bool normalize_batch = true; ///< standardise the sum over the batch (GDPO's second stage)
  rlcore::nan_policy nan_policy = rlcore::nan_policy::error;
};

namespace detail {

/// A reward is missing when it is NaN (x != x; no fast-math).
RLCORE_HD inline bool is_missing(double x) {
  return !(x == x);
}

template <class Columns>
struct missing_reward_count {
  Columns columns;
  RLCORE_HD index_t operator()(index_t flat) const {
    const index_t i = flat / columns.cols;
    const index_t k = flat % columns.cols;
    return is_missing(static_cast<double>(columns(i, k))) ? 1 : 0;
  }
};

template <class Columns, class Context>
void check_missing_rewards(const char* function, const Columns& columns, const Context& ctx) {
  const index_t missing =
      ctx.reduce(columns.rows * columns.cols, index_t{0}, missing_reward_count<Columns>{columns});
  require(missing == 0, function, "reward_columns",
          "expected no missing (NaN) reward under nan_policy::error, got ", missing, " NaN entr",
          missing == 1 ? "y" : "ies");
}

template <class Columns, class Weights, class Out>
struct weighted_sum_kernel {
  Columns columns;
  Weights weights;
  Out out;
  RLCORE_HD void operator()(index_t i) const {
    double sum = 0;
    for (index_t k = 0; k < columns.cols; ++k) {
      const double x = static_cast<double>(columns(i, k));
      if (!is_missing(x)) {
        sum += static_cast<double>(weights[k]) * x;
      }
    }
    out[i] = static_cast<typename Out::value_type>(sum);
  }
};

/// GDPO stage 1 for group g: out[i] = sum_k w_k (c_ik - mean_gk) / (std_gk + eps), moments of
/// column k over the group's non-missing entries; missing entries contribute 0.
template <class Groups, class Columns, class Weights, class Out>
struct decoupled_group_kernel {
  Groups groups;
  Columns columns;
  Weights weights;
  Out out;
  std_kind kind;
  double eps;
  struct column_value {
    Columns columns;
    index_t k;
    RLCORE_HD double operator()(index_t i) const { return static_cast<double>(columns(i, k)); }
  };
  struct present {
    Columns columns;
    index_t k;
    RLCORE_HD bool operator()(index_t i) const {
      return !is_missing(static_cast<double>(columns(i, k)));
    }
  };
  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    for (index_t i = begin; i < end; ++i) {
      out[i] = 0.0;
    }
    for (index_t k = 0; k < columns.cols; ++k) {
      const auto m =
          math::range_moments_if(begin, end, column_value{columns, k}, present{columns, k}, kind);
      const double w = static_cast<double>(weights[k]);
      for (index_t i = begin; i < end; ++i) {
        const double x = static_cast<double>(columns(i, k));
        if (!is_missing(x)) {
          // (x - mean) / (std + eps), formed in units (math/stats.hpp)
          out[i] += w
                    * math::standardized_advantage(m.units.centred(x), 0.0, m.units.stddev,
                                                   m.units.eps_in_units(eps), true);
        }
      }
    }
  }
};

/// out[i] = (values[i] - mean) / (std + eps) (or values[i] - mean), formed in units
/// (math/stats.hpp), saturated to the output type.
template <class Values, class Out>
struct standardize_kernel {
  Values values;
  Out out;
  math::moments_in_units moments;
  double eps;
  bool divide_by_std;
  RLCORE_HD void operator()(index_t i) const {
    const double a =
        math::standardized_advantage(moments.centred(static_cast<double>(values[i])), 0.0,
                                     moments.stddev, moments.eps_in_units(eps), divide_by_std);
    out[i] = math::finite_cast<typename Out::value_type>(
        divide_by_std ? a : math::from_units(a, moments.unit));
  }
};

template <class Lengths, class Out>
struct overlong_kernel {
  Lengths lengths;
  Out out;
  double max_length;
  double cache_length;
  RLCORE_HD void operator()(index_t i) const {
    out[i] = static_cast<typename Out::value_type>(
        math::overlong_penalty(static_cast<double>(lengths[i]), max_length, cache_length));
  }
};

template <class Groups, class Scores, class Flags>
struct zero_spread_kernel {
  zero_spread_flag<Groups, Scores> flag;
  Flags flags;
  RLCORE_HD void operator()(index_t g) const {
    flags[g] = static_cast<typename Flags::value_type>(flag(g));
  }
};

template <class Layout, class Lengths, class Out>
struct truncation_mask_kernel {
  Layout layout;
  Lengths lengths;
  Out out;
  double max_length;
  RLCORE_HD void operator()(index_t i, index_t t) const {
    using T = typename Out::value_type;
    out(i, t) = layout.valid(i, t) && static_cast<double>(lengths[i]) < max_length ? T(1) : T(0);
  }
};

template <class Lengths>
struct truncated_count {
  Lengths lengths;
  double max_length;
  RLCORE_HD index_t operator()(index_t i) const {
    return static_cast<double>(lengths[i]) >= max_length ? 1 : 0;
  }
};

template <class Columns, class Weights, class Out>
void validate_reward_columns(const char* function, const Columns& columns, const Weights& weights,
                             const Out& out) {
  require(weights.size == columns.cols, function, "weights", "expected K = ", columns.cols,
          " entries (one per reward column), got ", weights.size);
  require_sequence_count(function, "rewards_out", out.size, columns.rows);
}

inline void validate_nan_policy(const char* function, nan_policy policy) {
  require(policy == nan_policy::error || policy == nan_policy::skip_column, function,
          "options.nan_policy", "expected error or skip_column, got ", static_cast<int>(policy));
}

} // namespace detail

/// Weighted sum of K reward columns: rewards_out[i] = sum_k weights[k] * reward_columns(i, k), in
/// double. NaN marks a missing reward: an error by default (nan_policy::error), or skipped for that
/// sequence (nan_policy::skip_column: the column contributes nothing to row i).
/// Shapes: reward_columns N x K matrix_like, weights K, rewards_out N.
template <matrix_like Columns, vector_like Weights, class Out>
requires mutable_vector_like<std::remove_reference_t<Out>>
void weighted_reward_sum(const Columns& reward_columns, const Weights& weights, Out&& rewards_out,
                         const reward_sum_options& options = {},
                         const execution_context<memory_space_of<const Columns>>& ctx = {}) {
  constexpr const char* function = "weighted_reward_sum";
  const auto c = as_matrix_view(reward_columns);
  const auto w = as_vector_view(weights);
  const auto out = as_vector_view(rewards_out);
  detail::static_check_spaces<typename decltype(c)::space, uniform_groups, decltype(w),
                              decltype(out)>();
  detail::validate_nan_policy(function, options.nan_policy);
  detail::validate_reward_columns(function, c, w, out);
  if (options.nan_policy == nan_policy::error) {
    detail::check_missing_rewards(function, c, ctx);
  }
  ctx.for_each(c.rows,
               detail::weighted_sum_kernel<decltype(c), decltype(w), decltype(out)>{c, w, out});
}

/// GDPO's decoupled normalisation (Liu et al. 2026, "GDPO: Group reward-Decoupled Normalization
/// Policy Optimization"): each reward column is standardised inside each group, then the columns
/// are summed with their weights, then (normalize_batch, default) the sum is standardised over the
/// batch:
///   A_i = sum_k w_k (c_ik - mean_gk) / (std_gk + eps),   rewards_out[i] = (A_i - mean(A)) /
///   (std(A) + eps)
/// std unbiased by default (std_kind), eps = 1e-6. A group of one sequence, or a column constant
/// in the group, contributes 0. nan_policy as in weighted_reward_sum; with skip_column the group
/// moments of column k use the group's non-missing entries only. The result is an advantage per
/// sequence (broadcast it as grpo_outcome_advantages does, or use it as the scores of any
/// estimator). Shapes: reward_columns N x K, weights K, rewards_out N; groups over N.
template <matrix_like Columns, vector_like Weights, class Groups, class Out>
requires mutable_vector_like<std::remove_reference_t<Out>>
void normalized_reward_sum(const Columns& reward_columns, const Weights& weights,
                           const Groups& groups, Out&& rewards_out,
                           const normalized_reward_sum_options& options = {},
                           const execution_context<memory_space_of<const Columns>>& ctx = {}) {
  constexpr const char* function = "normalized_reward_sum";
  const auto c = as_matrix_view(reward_columns);
  const auto w = as_vector_view(weights);
  const auto out = as_vector_view(rewards_out);
  detail::static_check_spaces<typename decltype(c)::space, Groups, decltype(w), decltype(out)>();
  detail::validate_nan_policy(function, options.nan_policy);
  detail::validate_reward_columns(function, c, w, out);
  detail::require_positive_eps(function, "options.eps", options.eps);
  detail::require_std_kind(function, "options.std_kind", options.std_kind);
  const index_t num_groups = detail::validate_groups(function, groups, c.rows);
  if (options.nan_policy == nan_policy::error) {
    detail::check_missing_rewards(function, c, ctx);
  }
  using space = memory_space_of<const Columns>;
  auto sums = ctx.template allocate<double>(c.rows);
  const vector_view<double, space> sum_view{sums.data(), c.rows, 1};
  ctx.for_each(num_groups,
               detail::decoupled_group_kernel<Groups, decltype(c), decltype(w), decltype(sum_view)>{
                   groups, c, w, sum_view, options.std_kind, options.eps});
  math::moments_in_units moments; // mean 0, std 0, unit 1: values unchanged
  if (options.normalize_batch) {
    moments = detail::sequence_moments(ctx, c.rows, sum_view, options.std_kind).units;
  }
  ctx.for_each(c.rows, detail::standardize_kernel<decltype(sum_view), decltype(out)>{
                           sum_view, out, moments, options.eps, options.normalize_batch});
}

/// DAPO soft overlong punishment (Yu et al. 2025, eq. 13), per sequence of length L:
///   0 if L <= max_length - cache_length; ((max_length - cache_length) - L) / cache_length if
///   max_length - cache_length < L <= max_length (linear from 0 to -1); -1 if L > max_length.
/// Add it to the task reward. cache_length = 0 gives a hard cut (0, then -1 beyond max_length).
/// Shapes: lengths (any arithmetic) and penalties_out vectors of N. Errors: max_length <= 0,
/// cache_length outside [0, max_length]. DAPO: max_length 20480, cache_length 4096; verl's DAPO
/// reward manager: cache_length = overlong_buffer.len, multiply by overlong_buffer.penalty_factor.
template <vector_like Lengths, class Out>
requires mutable_vector_like<std::remove_reference_t<Out>>
void dapo_overlong_penalty(const Lengths& lengths, index_t max_length, index_t cache_length,
                           Out&& penalties_out,
                           const execution_context<memory_space_of<const Lengths>>& ctx = {}) {
  constexpr const char* function = "dapo_overlong_penalty";
  const auto len = as_vector_view(lengths);
  const auto out = as_vector_view(penalties_out);
  detail::static_check_spaces<typename decltype(len)::space, uniform_groups, decltype(out)>();
  detail::require(max_length > 0, function, "max_length", "expected a value > 0, got ", max_length);
  detail::require(cache_length >= 0 && cache_length <= max_length, function, "cache_length",
                  "expected a value in [0, max_length = ", max_length, "], got ", cache_length);
  detail::require_sequence_count(function, "penalties_out", out.size, len.size);
  ctx.for_each(len.size,
               detail::overlong_kernel<decltype(len), decltype(out)>{
                   len, out, static_cast<double>(max_length), static_cast<double>(cache_length)});
}

/// Dynamic-sampling filter (DAPO): flags_out[g] = 1 when group g is non-empty and all its scores
/// are equal (no relative signal: every group-relative advantage is 0), else 0. Returns the number
/// of flagged groups. Shapes: scores N; flags_out one entry per group (any arithmetic type).
template <vector_like Scores, class Groups, class Flags>
requires mutable_vector_like<std::remove_reference_t<Flags>>
    index_t zero_spread_groups(const Scores& scores, const Groups& groups, Flags&& flags_out,
                               const execution_context<memory_space_of<const Scores>>& ctx = {}) {
  constexpr const char* function = "zero_spread_groups";
  const auto s = as_vector_view(scores);
  const auto flags = as_vector_view(flags_out);
  detail::static_check_spaces<typename decltype(s)::space, Groups, decltype(flags)>();
  const index_t num_groups = detail::validate_groups(function, groups, s.size);
  detail::require(flags.size == num_groups, function, "flags_out", "expected ", num_groups,
                  " entries (one per group), got ", flags.size);
  using flag = detail::zero_spread_flag<Groups, decltype(s)>;
  ctx.for_each(num_groups, detail::zero_spread_kernel<Groups, decltype(s), decltype(flags)>{
                               {groups, s}, flags});
  return static_cast<index_t>(ctx.reduce(num_groups, 0.0, flag{groups, s}));
}

/// Truncated-response mask (DAPO overlong filtering): mask_out(i, t) = 1 at the valid tokens of
/// sequences with lengths[i] < max_length (finished within the budget), 0 at masked tokens and at
/// every token of a truncated sequence (lengths[i] >= max_length), so truncated samples add
/// nothing to the loss. Returns the number of truncated sequences.
/// Shapes: lengths N (the generated lengths); mask_out per-token for the layout (any arithmetic).
template <batch_layout Layout, vector_like Lengths, class Mask>
requires mutable_token_tensor_for<std::remove_reference_t<Mask>, Layout>
    index_t truncated_response_mask(const Layout& layout, const Lengths& lengths,
                                    index_t max_length, Mask&& mask_out,
                                    const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "truncated_response_mask";
  const auto len = as_vector_view(lengths);
  detail::static_check_spaces<typename Layout::space, uniform_groups, decltype(len)>();
  detail::require_sequence_count(function, "lengths", len.size, layout.rows());
  detail::require(max_length > 0, function, "max_length", "expected a value > 0, got ", max_length);
  const auto out = layout.bind(function, "mask_out", mask_out);
  const auto limit = static_cast<double>(max_length);
  ctx.for_each_token(layout, detail::truncation_mask_kernel<Layout, decltype(len), decltype(out)>{
                                 layout, len, out, limit});
  return ctx.reduce(len.size, index_t{0}, detail::truncated_count<decltype(len)>{len, limit});
}

} // namespace rlcore

// GRPO with process supervision (DeepSeekMath, Shao et al. 2024, sec. 4.1.3): step rewards
// normalised over every step of every response of the group, then summed over later steps.
#pragma once

#include "../math/advantage.hpp"
#include "../math/stats.hpp"
#include "common.hpp"

#include <type_traits>

namespace rlcore {

/// Options of grpo_process_advantages.
struct grpo_process_options {
  rlcore::std_kind std_kind = rlcore::std_kind::unbiased;
  double eps = 1e-6; ///< added to the std (> 0)
};

namespace detail {

/// Per-sequence copies of the moments of its group's step rewards, in units (math/stats.hpp).
struct step_moments {
  int* level;      ///< unit level (set by pass 1)
  double* mean_hi; ///< pass 1: first mean; pass 2: corrected mean hi
  double* mean_lo; ///< pass 2: corrected mean lo
  double* stddev;  ///< pass 2: std in units
};

/// Pass-1 / pass-2 terms of the step rewards of a row (steps: valid tokens with a step end).
template <class Layout, class Rewards, class Ends>
struct step_reward_terms {
  Layout layout;
  Rewards rewards;
  Ends ends;
  const int* level;         ///< per sequence; null for pass 1
  const double* first_mean; ///< per sequence, in units; null for pass 1
  RLCORE_HD bool is_step(index_t i, index_t t) const {
    return layout.valid(i, t) && ends(i, t) != 0;
  }
  RLCORE_HD math::moment_sums operator()(index_t i, index_t t) const {
    if (!is_step(i, t)) {
      return math::moment_sums{};
    }
    const auto r = static_cast<double>(rewards(i, t));
    return first_mean == nullptr ? math::first_pass_term(r)
                                 : math::second_pass_term(r, first_mean[i], level[i]);
  }
};

/// Combines the per-row sums of group g and writes the group's statistic to every member:
/// pass 1 -> unit level and first mean; pass 2 -> corrected mean (hi + lo) and std, in units.
template <class Groups>
struct combine_step_moments {
  Groups groups;
  const math::moment_sums* row_sums;
  bool second_pass;
  std_kind kind;
  step_moments moments;
  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    math::moment_sums total;
    if (second_pass && end > begin) {
      total.level = moments.level[begin];
    }
    for (index_t k = begin; k < end; ++k) {
      total += row_sums[k];
    }
    if (!second_pass) {
      const double m1 = math::first_mean(total);
      for (index_t k = begin; k < end; ++k) {
        moments.level[k] = total.level;
        moments.mean_hi[k] = m1;
      }
      return;
    }
    const math::split_mean m = end > begin
                                   ? math::corrected_split_mean(moments.mean_hi[begin], total)
                                   : math::split_mean{};
    const double s = math::sqrt(math::variance(total, kind));
    for (index_t k = begin; k < end; ++k) {
      moments.mean_hi[k] = m.hi;
      moments.mean_lo[k] = m.lo;
      moments.stddev[k] = s;
    }
  }
};

/// Suffix sum of normalised step rewards (r - mean) / (std + eps), formed in the group's units.
template <class Layout, class Rewards, class Ends>
struct process_coefficients {
  step_reward_terms<Layout, Rewards, Ends> steps;
  const double* mean_hi;
  const double* mean_lo;
  const double* stddev;
  const int* level;
  double eps;
  RLCORE_HD math::affine_step operator()(index_t i, index_t t) const {
    if (!steps.is_step(i, t)) {
      return math::suffix_sum_step(0.0);
    }
    const math::moments_in_units units = math::units_of_level(level[i]);
    const double r = units.in_units(static_cast<double>(steps.rewards(i, t)));
    return math::suffix_sum_step(math::standardized_advantage(r - mean_hi[i], mean_lo[i], stddev[i],
                                                              units.eps_in_units(eps), true));
  }
};

template <class Layout, class Out>
struct write_process_advantage {
  Layout layout;
  Out out;
  RLCORE_HD void operator()(index_t i, index_t t, double, double value) const {
    using T = typename Out::value_type;
    out(i, t) = layout.valid(i, t) ? static_cast<T>(value) : T(0);
  }
};

} // namespace detail

namespace detail {

template <class Layout, class R, class E, class Groups, class A, class Context>
void grpo_process_impl(const Layout& layout, const R& r, const E& ends, const Groups& groups,
                       index_t num_groups, const A& a, const grpo_process_options& options,
                       const Context& ctx) {
  const index_t n = layout.rows();
  using terms = step_reward_terms<Layout, R, E>;
  auto row_sums = ctx.template allocate<math::moment_sums>(n);
  auto level = ctx.template allocate<int>(n);
  auto mean_hi = ctx.template allocate<double>(n);
  auto mean_lo = ctx.template allocate<double>(n);
  auto stddev = ctx.template allocate<double>(n);
  const step_moments moments{level.data(), mean_hi.data(), mean_lo.data(), stddev.data()};
  ctx.reduce_rows(layout, row_sums.data(), terms{layout, r, ends, nullptr, nullptr});
  ctx.for_each(num_groups, combine_step_moments<Groups>{groups, row_sums.data(), false,
                                                        options.std_kind, moments});
  ctx.reduce_rows(layout, row_sums.data(), terms{layout, r, ends, level.data(), mean_hi.data()});
  ctx.for_each(num_groups, combine_step_moments<Groups>{groups, row_sums.data(), true,
                                                        options.std_kind, moments});
  ctx.reverse_affine_scan_rows(
      layout,
      process_coefficients<Layout, R, E>{terms{layout, r, ends, nullptr, nullptr}, mean_hi.data(),
                                         mean_lo.data(), stddev.data(), level.data(), options.eps},
      write_process_advantage<Layout, A>{layout, a});
}

/// Counts violations of the step offsets: offsets[0] == 0, non-decreasing, offsets[N] == steps.
template <class Offsets>
struct step_offset_violation {
  Offsets offsets;
  index_t num_sequences;
  index_t num_steps;
  RLCORE_HD index_t operator()(index_t i) const {
    const auto at = static_cast<index_t>(offsets[i]);
    if (i == 0) {
      return at == 0 && (num_sequences != 0 || at == num_steps) ? 0 : 1;
    }
    const bool ordered = at >= static_cast<index_t>(offsets[i - 1]);
    const bool last_ok = i != num_sequences || at == num_steps;
    return ordered && last_ok ? 0 : 1;
  }
};

/// 1 for a row whose step positions are not strictly increasing inside [0, row_length).
template <class Layout, class Offsets, class Positions>
struct step_position_violation {
  Layout layout;
  Offsets offsets;
  Positions positions;
  RLCORE_HD index_t operator()(index_t i) const {
    const index_t len = layout.row_length(i);
    index_t previous = -1;
    for (auto k = static_cast<index_t>(offsets[i]); k < static_cast<index_t>(offsets[i + 1]); ++k) {
      const auto t = static_cast<index_t>(positions[k]);
      if (t <= previous || t >= len) {
        return 1;
      }
      previous = t;
    }
    return 0;
  }
};

/// Scatters the steps of row i into dense token-slot buffers (reward, end flag).
template <class Layout, class Offsets, class Positions, class Values>
struct scatter_steps {
  Layout layout;
  Offsets offsets;
  Positions positions;
  Values values;
  double* rewards;
  unsigned char* ends;
  RLCORE_HD void operator()(index_t i) const {
    for (auto k = static_cast<index_t>(offsets[i]); k < static_cast<index_t>(offsets[i + 1]); ++k) {
      const index_t slot = token_slot(layout, i, static_cast<index_t>(positions[k]));
      rewards[slot] = static_cast<double>(values[k]);
      ends[slot] = 1;
    }
  }
};

/// A per-token view of `layout`'s shape over a token-slot buffer (padded: N x T row-major;
/// packed: the flat buffer).
template <class Layout, class T>
auto token_slot_view(const Layout& layout, T* data) {
  using space = typename Layout::space;
  if constexpr (Layout::is_packed) {
    return vector_view<T, space>{data, layout.token_slots(), 1};
  } else {
    return matrix_view<T, space>{data, layout.rows(), layout.cols(), layout.cols(), 1};
  }
}

} // namespace detail

/// GRPO process-supervision advantages. A step of response i ends at a valid token t with
/// step_end_mask(i, t) != 0 and carries the reward step_rewards(i, t) (other entries are ignored).
/// With R_g the rewards of every step of every response of group g (mean and std over R_g, std
/// unbiased by default, two passes in double):
///   r~ = (r - mean(R_g)) / (std(R_g) + eps),   A[i, t] = sum of r~ over the steps of i ending at
///   or after t,
/// at valid tokens (masked tokens get 0; tokens after the last step get 0). A group with one step
/// (or identical step rewards) gets 0 everywhere. Computed with per-row reductions and one reverse
/// affine scan (a suffix sum).
/// Shapes: step_rewards, step_end_mask (any arithmetic), advantages_out per-token; groups over N.
/// Options: std_kind = unbiased, eps = 1e-6.
template <batch_layout Layout, class StepRewards, class StepEnds, class Groups, class Advantages>
requires token_tensor_for<const StepRewards, Layout> && token_tensor_for<
    const StepEnds, Layout> && mutable_token_tensor_for<std::remove_reference_t<Advantages>, Layout>
void grpo_process_advantages(const Layout& layout, const StepRewards& step_rewards,
                             const StepEnds& step_end_mask, const Groups& groups,
                             Advantages&& advantages_out, const grpo_process_options& options = {},
                             const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "grpo_process_advantages";
  detail::require_positive_eps(function, "options.eps", options.eps);
  detail::require_std_kind(function, "options.std_kind", options.std_kind);
  detail::static_check_spaces<typename Layout::space, Groups>();
  const index_t n = layout.rows();
  const index_t num_groups = detail::validate_groups(function, groups, n);
  const auto r = layout.bind(function, "step_rewards", step_rewards);
  const auto ends = layout.bind(function, "step_end_mask", step_end_mask);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  detail::grpo_process_impl(layout, r, ends, groups, num_groups, a, options, ctx);
}

/// GRPO process-supervision advantages from step lists: the steps of sequence i are
/// k in [step_offsets[i], step_offsets[i + 1]), step k ending at token step_positions[k] (an index
/// into row i, strictly increasing within the row) with reward step_values[k]. Same result as
/// grpo_process_advantages with the steps scattered into a dense reward matrix and step-end mask
/// (a step ending at a masked token is ignored there too).
/// Shapes: step_offsets N + 1 (integral, offsets[0] == 0, non-decreasing, offsets[N] == number of
/// steps), step_positions and step_values one entry per step; advantages_out per-token.
template <batch_layout Layout, vector_like StepOffsets, vector_like StepPositions,
          vector_like StepValues, class Groups, class Advantages>
requires mutable_token_tensor_for<std::remove_reference_t<Advantages>, Layout>
void grpo_process_advantages_from_steps(const Layout& layout, const StepOffsets& step_offsets,
                                        const StepPositions& step_positions,
                                        const StepValues& step_values, const Groups& groups,
                                        Advantages&& advantages_out,
                                        const grpo_process_options& options = {},
                                        const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "grpo_process_advantages_from_steps";
  detail::require_positive_eps(function, "options.eps", options.eps);
  detail::require_std_kind(function, "options.std_kind", options.std_kind);
  detail::static_check_spaces<typename Layout::space, Groups>();
  const index_t n = layout.rows();
  const index_t num_groups = detail::validate_groups(function, groups, n);
  const auto offsets = as_vector_view(step_offsets);
  const auto positions = as_vector_view(step_positions);
  const auto values = as_vector_view(step_values);
  detail::static_check_spaces<typename Layout::space, Groups, decltype(offsets),
                              decltype(positions), decltype(values)>();
  detail::require(offsets.size == n + 1, function, "step_offsets", "expected N + 1 = ", n + 1,
                  " entries, got ", offsets.size);
  detail::require(values.size == positions.size, function, "step_values", "expected ",
                  positions.size, " entries (one per step position), got ", values.size);
  const index_t bad_offsets =
      ctx.reduce(n + 1, index_t{0},
                 detail::step_offset_violation<decltype(offsets)>{offsets, n, positions.size});
  detail::require(bad_offsets == 0, function, "step_offsets",
                  "expected offsets[0] == 0, non-decreasing, offsets[N] == number of steps = ",
                  positions.size, ", got ", bad_offsets, " violation(s)");
  const index_t bad_rows =
      ctx.reduce(n, index_t{0},
                 detail::step_position_violation<Layout, decltype(offsets), decltype(positions)>{
                     layout, offsets, positions});
  detail::require(bad_rows == 0, function, "step_positions",
                  "expected strictly increasing token indices inside each row [0, row length), "
                  "got ",
                  bad_rows, " row(s) violating it");
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  auto rewards = ctx.template allocate<double>(layout.token_slots());
  auto ends = ctx.template allocate<unsigned char>(layout.token_slots());
  ctx.for_each(
      n, detail::scatter_steps<Layout, decltype(offsets), decltype(positions), decltype(values)>{
             layout, offsets, positions, values, rewards.data(), ends.data()});
  auto reward_view = detail::token_slot_view(layout, static_cast<const double*>(rewards.data()));
  auto end_view = detail::token_slot_view(layout, static_cast<const unsigned char*>(ends.data()));
  const auto r = layout.bind(function, "step_values", reward_view);
  const auto e = layout.bind(function, "step_positions", end_view);
  detail::grpo_process_impl(layout, r, e, groups, num_groups, a, options, ctx);
}

} // namespace rlcore

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

/// Pass-1 / pass-2 terms of the step rewards of a row (steps: valid tokens with a step end).
template <class Layout, class Rewards, class Ends>
struct step_reward_terms {
  Layout layout;
  Rewards rewards;
  Ends ends;
  const double* first_mean; ///< per sequence; null for pass 1
  RLCORE_HD bool is_step(index_t i, index_t t) const {
    return layout.valid(i, t) && ends(i, t) != 0;
  }
  RLCORE_HD math::moment_sums operator()(index_t i, index_t t) const {
    if (!is_step(i, t)) {
      return math::moment_sums{};
    }
    const double r = static_cast<double>(rewards(i, t));
    return first_mean == nullptr ? math::first_pass_term(r)
                                 : math::second_pass_term(r, first_mean[i]);
  }
};

/// Combines the per-row sums of group g and writes the group's statistic to every member:
/// pass 1 -> first mean; pass 2 -> corrected mean and std.
template <class Groups>
struct combine_step_moments {
  Groups groups;
  const math::moment_sums* row_sums;
  bool second_pass;
  std_kind kind;
  double* mean; ///< in: first mean (pass 2); out: first mean (pass 1) or corrected mean (pass 2)
  double* stddev;
  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    math::moment_sums total;
    for (index_t k = begin; k < end; ++k) {
      total += row_sums[k];
    }
    if (!second_pass) {
      const double m1 = math::first_mean(total);
      for (index_t k = begin; k < end; ++k) {
        mean[k] = m1;
      }
      return;
    }
    const double m = end > begin ? math::corrected_mean(mean[begin], total) : 0.0;
    const double s = math::sqrt(math::variance(total, kind));
    for (index_t k = begin; k < end; ++k) {
      mean[k] = m;
      stddev[k] = s;
    }
  }
};

/// Suffix sum of normalised step rewards.
template <class Layout, class Rewards, class Ends>
struct process_coefficients {
  step_reward_terms<Layout, Rewards, Ends> steps;
  const double* mean;
  const double* stddev;
  double eps;
  RLCORE_HD math::affine_step operator()(index_t i, index_t t) const {
    return math::suffix_sum_step(
        steps.is_step(i, t) ? math::standardized_advantage(static_cast<double>(steps.rewards(i, t)),
                                                           mean[i], stddev[i], eps, true)
                            : 0.0);
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
  const index_t n = layout.rows();
  const index_t num_groups = detail::validate_groups(function, groups, n);
  const auto r = layout.bind(function, "step_rewards", step_rewards);
  const auto ends = layout.bind(function, "step_end_mask", step_end_mask);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  using terms = detail::step_reward_terms<Layout, decltype(r), decltype(ends)>;
  auto row_sums = ctx.template allocate<math::moment_sums>(n);
  auto mean = ctx.template allocate<double>(n);
  auto stddev = ctx.template allocate<double>(n);
  ctx.reduce_rows(layout, row_sums.data(), terms{layout, r, ends, nullptr});
  ctx.for_each(num_groups,
               detail::combine_step_moments<Groups>{groups, row_sums.data(), false,
                                                    options.std_kind, mean.data(), stddev.data()});
  ctx.reduce_rows(layout, row_sums.data(), terms{layout, r, ends, mean.data()});
  ctx.for_each(num_groups,
               detail::combine_step_moments<Groups>{groups, row_sums.data(), true, options.std_kind,
                                                    mean.data(), stddev.data()});
  ctx.reverse_affine_scan_rows(
      layout,
      detail::process_coefficients<Layout, decltype(r), decltype(ends)>{
          terms{layout, r, ends, nullptr}, mean.data(), stddev.data(), options.eps},
      detail::write_process_advantage<Layout, decltype(a)>{layout, a});
}

} // namespace rlcore

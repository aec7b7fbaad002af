// Group-relative outcome advantages: GRPO (group / batch / no std scaling = Dr. GRPO), RLOO, OPO
// and pass@k. One score s_i per sequence (see sequence_scores for per-token rewards), groups of
// responses to the same prompt; the per-sequence advantage is broadcast to every valid token and
// masked tokens get exactly 0.
//
// Shapes: N sequences; scores: vector of N; groups: uniform_groups{G} (N % G == 0) or
// offset_groups; advantages_out: per-token tensor of the layout (N x T padded, or offsets[N] flat
// packed). Moments are computed in double, in two passes (math/stats.hpp): identical scores in a
// group give advantage exactly 0. No gradient flows through an advantage.
#pragma once

#include "../math/advantage.hpp"
#include "../math/stats.hpp"
#include "common.hpp"

#include <type_traits>
#include <utility>

namespace rlcore {

/// How GRPO divides the centred score s_i - mean_g.
enum class grpo_scaling {
  group, ///< by std_g + eps (DeepSeekMath GRPO; verl, TRL scale_rewards="group")
  batch, ///< by the std of all N scores + eps (TRL scale_rewards="batch"; REINFORCE++-style)
  none   ///< not at all: s_i - mean_g (Dr. GRPO; verl norm_adv_by_std_in_grpo=False)
};

/// What a group of one response gets.
enum class singleton_group_policy {
  zero,      ///< advantage 0: no relative signal (default)
  raw_reward ///< the group's mean := 0 and std := 1 (verl): s / (1 + eps), or s when unscaled
};

/// Options of grpo_outcome_advantages.
struct grpo_advantage_options {
  grpo_scaling scaling = grpo_scaling::group;
  rlcore::std_kind std_kind = rlcore::std_kind::unbiased; ///< for std_g and the batch std
  double eps = 1e-6;                                      ///< added to the std (> 0)
  singleton_group_policy singleton_group = singleton_group_policy::zero;
};

/// Options of pass_at_k_advantages.
struct pass_at_k_options {
  bool divide_by_std = true; ///< divide s_max - s_second by std_g + eps (verl's default)
  rlcore::std_kind std_kind = rlcore::std_kind::unbiased;
  double eps = 1e-6; ///< > 0
};

namespace detail {

/// Writes GRPO advantages of every member of group g.
template <class Groups, class Scores, class Out>
struct grpo_group_kernel {
  Groups groups;
  Scores scores;
  Out out;
  grpo_scaling scaling;
  std_kind kind;
  double eps;
  bool singleton_raw_reward;
  math::moments_in_units batch; ///< moments of all N scores (batch scaling only)

  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    // Everything in units (math/stats.hpp): the centred score and the spread share one unit, the
    // group's or (batch scaling) the batch's, which is never smaller.
    const math::moments_in_units m =
        math::range_moments(begin, end, element_as_double<Scores>{scores}, kind).units;
    const bool raw_reward = end - begin == 1 && singleton_raw_reward;
    const bool use_batch = scaling == grpo_scaling::batch && !raw_reward;
    const int steps = use_batch ? batch.level - m.level : 0;
    const math::moments_in_units& unit = use_batch && steps >= 0 ? batch : m;
    // raw_reward: mean := 0 and std := 1 (1 / u in units)
    const double spread = raw_reward
                              ? m.inverse_unit
                              : (use_batch ? math::to_larger_unit(batch.stddev, -steps) : m.stddev);
    const bool divide = scaling != grpo_scaling::none;
    using T = typename Out::value_type;
    for (index_t k = begin; k < end; ++k) {
      const auto s = static_cast<double>(scores[k]);
      const double centred =
          raw_reward ? m.in_units(s) : math::to_larger_unit(m.centred(s), steps > 0 ? steps : 0);
      const double a =
          math::standardized_advantage(centred, 0.0, spread, unit.eps_in_units(eps), divide);
      out[k] = math::finite_cast<T>(divide ? a : math::from_units(a, unit.unit));
    }
  }
};

/// Writes RLOO advantages of every member of group g.
template <class Groups, class Scores, class Out>
struct rloo_group_kernel {
  Groups groups;
  Scores scores;
  Out out;
  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    const math::moments_in_units m =
        math::range_moments(begin, end, element_as_double<Scores>{scores}, std_kind::population)
            .units;
    using T = typename Out::value_type;
    for (index_t k = begin; k < end; ++k) {
      // G / (G - 1) (s - mean), formed in units (exact for any finite score), then saturated
      const double a = math::leave_one_out_advantage(m.centred(static_cast<double>(scores[k])), 0.0,
                                                     static_cast<double>(end - begin));
      out[k] = math::finite_cast<T>(math::from_units(a, m.unit));
    }
  }
};

/// Writes OPO advantages s_i - sum_j n_j s_j / sum_j n_j of every member of group g.
template <class Groups, class Scores, class Lengths, class Out>
struct opo_group_kernel {
  Groups groups;
  Scores scores;
  Lengths lengths;
  Out out;
  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    const math::moments_in_units baseline = math::weighted_range_mean_in_units(
        begin, end, element_as_double<Scores>{scores}, element_as_double<Lengths>{lengths});
    double total_length = 0;
    for (index_t k = begin; k < end; ++k) {
      total_length += static_cast<double>(lengths[k]);
    }
    using T = typename Out::value_type;
    for (index_t k = begin; k < end; ++k) {
      // A group without valid tokens has no baseline and nothing to train: advantage 0.
      // s - b formed in units (accurate for scores near b), then saturated
      out[k] = total_length > 0 ? math::finite_cast<T>(math::from_units(
                   baseline.centred(static_cast<double>(scores[k])), baseline.unit))
                                : T(0);
    }
  }
};

/// Writes pass@k advantages of group g: the best member (first on ties) gets s_max - s_second
/// (over std_g + eps when divide_by_std), the others 0.
template <class Groups, class Scores, class Out>
struct pass_at_k_group_kernel {
  Groups groups;
  Scores scores;
  Out out;
  bool divide_by_std;
  std_kind kind;
  double eps;
  RLCORE_HD void operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    using T = typename Out::value_type;
    if (end - begin < 2) {
      for (index_t k = begin; k < end; ++k) {
        out[k] = T(0);
      }
      return;
    }
    index_t best = begin;
    for (index_t k = begin + 1; k < end; ++k) {
      if (static_cast<double>(scores[k]) > static_cast<double>(scores[best])) {
        best = k;
      }
    }
    bool have_second = false;
    double second = 0;
    for (index_t k = begin; k < end; ++k) {
      const double s = static_cast<double>(scores[k]);
      if (k != best && (!have_second || s > second)) {
        second = s;
        have_second = true;
      }
    }
    const auto top = static_cast<double>(scores[best]);
    // Plainly when s_max - s_second and std + eps are doubles and the unit is >= 1 (the
    // difference of two scores far below the group's largest |s| keeps its precision); else in
    // units: the group's when dividing by its std, else the one of the larger of |top|, |second|.
    math::moments_in_units m;
    if (divide_by_std) {
      m = math::range_moments(begin, end, element_as_double<Scores>{scores}, kind).units;
    } else {
      m = math::units_of_level(math::unit_level_of(math::max(math::abs(top), math::abs(second))));
    }
    const double plain_spread = m.stddev * m.unit;
    const bool plain = m.level != math::small_unit_level && math::isfinite(top - second)
                       && math::isfinite(plain_spread + eps);
    const double a =
        plain ? math::standardized_advantage(top, second, plain_spread, eps, divide_by_std)
              : math::from_units(math::standardized_advantage(m.in_units(top), m.in_units(second),
                                                              m.stddev, m.eps_in_units(eps),
                                                              divide_by_std),
                                 divide_by_std ? 1.0 : m.unit);
    const T best_value = math::finite_cast<T>(a);
    for (index_t k = begin; k < end; ++k) {
      out[k] = k == best ? best_value : T(0);
    }
  }
};

/// 1 for a group holding exactly one sequence.
template <class Groups>
struct singleton_group_flag {
  Groups groups;
  RLCORE_HD index_t operator()(index_t g) const {
    return groups.end(g) - groups.begin(g) == 1 ? 1 : 0;
  }
};

/// 1 at a valid token (counts n_i with reduce_rows).
template <class Layout>
struct valid_token_count {
  Layout layout;
  RLCORE_HD double operator()(index_t i, index_t t) const { return layout.valid(i, t) ? 1.0 : 0.0; }
};

inline void validate_group_options(const char* function, const grpo_advantage_options& options) {
  require_positive_eps(function, "options.eps", options.eps);
  require_std_kind(function, "options.std_kind", options.std_kind);
  require(options.singleton_group == singleton_group_policy::zero
              || options.singleton_group == singleton_group_policy::raw_reward,
          function, "options.singleton_group", "expected zero or raw_reward, got ",
          static_cast<int>(options.singleton_group));
  require(options.scaling == grpo_scaling::group || options.scaling == grpo_scaling::batch
              || options.scaling == grpo_scaling::none,
          function, "options.scaling", "expected group, batch or none, got ",
          static_cast<int>(options.scaling));
}

/// Per-sequence GRPO advantages into a view of N values.
template <class Context, class Scores, class Groups, class Out>
group_advantage_stats
grpo_sequence_impl(const char* function, const Scores& sv, const Groups& groups, const Out& ov,
                   const grpo_advantage_options& options, const Context& ctx) {
  const index_t n = sv.size;
  const index_t num_groups = validate_groups(function, groups, n);
  validate_group_options(function, options);
  math::moments_in_units batch;
  if (options.scaling == grpo_scaling::batch) {
    batch = sequence_moments(ctx, n, sv, options.std_kind).units;
  }
  ctx.for_each(num_groups,
               grpo_group_kernel<Groups, Scores, Out>{
                   groups, sv, ov, options.scaling, options.std_kind, options.eps,
                   options.singleton_group == singleton_group_policy::raw_reward, batch});
  return group_stats(ctx, num_groups, groups, sv, ov, n);
}

/// The frame shared by the token-broadcast group estimators: checks scores (vector of N =
/// layout.rows()) against the layout, binds advantages_out, lets `per_sequence(sv, seq)` write
/// the N per-sequence advantages into a double buffer `seq` (validating its own groups and
/// options first) and return the group metrics, then saturates `seq` to the output type and
/// broadcasts it to the valid tokens (0 at masked ones).
template <class Layout, class Scores, class Groups, class Advantages, class Context,
          class PerSequence>
group_advantage_stats broadcast_group_advantages(const char* function, const Layout& layout,
                                                 const Scores& scores, Advantages& advantages_out,
                                                 const Context& ctx, PerSequence&& per_sequence) {
  const auto sv = as_vector_view(scores);
  static_check_spaces<typename Layout::space, Groups, decltype(sv)>();
  require_sequence_count(function, "scores", sv.size, layout.rows());
  auto out = layout.bind(function, "advantages_out", advantages_out);
  auto buffer = ctx.template allocate<double>(sv.size);
  const vector_view<double, typename Layout::space> seq{buffer.data(), sv.size, 1};
  const group_advantage_stats stats = per_sequence(sv, seq);
  saturate_and_broadcast(layout, out, seq, ctx);
  return stats;
}

} // namespace detail

/// GRPO outcome advantages per sequence (DeepSeekMath, Shao et al. 2024, sec. 4.1.2):
///   a_i = (s_i - mean_g) / (std_g + eps)        scaling = group (default)
///   a_i = (s_i - mean_g) / (std_batch + eps)    scaling = batch (std of all N scores)
///   a_i = s_i - mean_g                          scaling = none (Dr. GRPO, Liu et al. 2025)
/// std is unbiased (n - 1, default) or population; eps = 1e-6. A group of one sequence gets 0
/// (singleton_group = zero, default) or verl's raw reward (mean := 0, std := 1). Empty offset
/// groups produce nothing.
/// Shapes: scores and advantages_out are vectors of N. Returns the group metrics.
/// Peers: verl grpo = defaults + singleton_group raw_reward (norm_adv_by_std_in_grpo=False ->
/// scaling none); TRL = eps 1e-4 with scale_rewards "group" / "batch" / "none"; OpenRLHF
/// group_norm = eps 1e-9, dr_grpo = scaling none.
template <vector_like Scores, class Groups, class Advantages>
requires mutable_vector_like<std::remove_reference_t<Advantages>> group_advantage_stats
grpo_outcome_sequence_advantages(const Scores& scores, const Groups& groups,
                                 Advantages&& advantages_out,
                                 const grpo_advantage_options& options = {},
                                 const execution_context<memory_space_of<const Scores>>& ctx = {}) {
  constexpr const char* function = "grpo_outcome_sequence_advantages";
  const auto sv = as_vector_view(scores);
  const auto ov = as_vector_view(advantages_out);
  detail::static_check_spaces<typename decltype(sv)::space, Groups, decltype(ov)>();
  detail::require_sequence_count(function, "advantages_out", ov.size, sv.size);
  return detail::grpo_sequence_impl(function, sv, groups, ov, options, ctx);
}

/// GRPO outcome advantages broadcast to tokens: advantages_out(i, t) = a_i at valid tokens, 0 at
/// masked ones, with a_i as in grpo_outcome_sequence_advantages (formula, options, peers).
/// Shapes: scores vector of N = layout.rows(); advantages_out per-token.
template <batch_layout Layout, vector_like Scores, class Groups, class Advantages>
requires mutable_token_tensor_for<std::remove_reference_t<Advantages>, Layout>
    group_advantage_stats grpo_outcome_advantages(const Layout& layout, const Scores& scores,
                                                  const Groups& groups, Advantages&& advantages_out,
                                                  const grpo_advantage_options& options = {},
                                                  const detail::context_for<Layout>& ctx = {}) {
  return detail::broadcast_group_advantages<Layout, Scores, Groups>(
      "grpo_outcome_advantages", layout, scores, advantages_out, ctx,
      [&](const auto& sv, const auto& seq) {
        return detail::grpo_sequence_impl("grpo_outcome_advantages", sv, groups, seq, options, ctx);
      });
}

/// RLOO advantages (Kool et al. 2019; Ahmadian et al. 2024): a_i = s_i - mean_{j != i} s_j
/// = G / (G - 1) (s_i - mean_g) for a group of size G, broadcast to valid tokens (0 at masked
/// ones). A group of one sequence gets 0 (verl's rloo leaves the raw score there). Same as
/// OpenRLHF "rloo", verl "rloo" and TRL's RLOO baseline on the sequence reward (their KL terms
/// aside).
/// Shapes: scores vector of N; advantages_out per-token.
template <batch_layout Layout, vector_like Scores, class Groups, class Advantages>
requires mutable_token_tensor_for<std::remove_reference_t<Advantages>, Layout>
    group_advantage_stats rloo_advantages(const Layout& layout, const Scores& scores,
                                          const Groups& groups, Advantages&& advantages_out,
                                          const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "rloo_advantages";
  return detail::broadcast_group_advantages<Layout, Scores, Groups>(
      function, layout, scores, advantages_out, ctx, [&](const auto& sv, const auto& seq) {
        const index_t num_groups = detail::validate_groups(function, groups, sv.size);
        ctx.for_each(num_groups,
                     detail::rloo_group_kernel<Groups, std::decay_t<decltype(sv)>,
                                               std::decay_t<decltype(seq)>>{groups, sv, seq});
        return detail::group_stats(ctx, num_groups, groups, sv, seq, sv.size);
      });
}

/// OPO advantages (Hao et al. 2025, "On-Policy RL with Optimal reward baseline"): the
/// length-weighted group baseline b_g = sum_j n_j s_j / sum_j n_j, n_j = valid tokens of sequence
/// j (from the layout), a_i = s_i - b_g, broadcast to valid tokens (0 at masked ones). A group of
/// one sequence gets 0; a group whose sequences have no valid token gets 0.
/// Shapes: scores vector of N; advantages_out per-token. verl adv_estimator=opo computes the
/// same baseline (it leaves the raw score in a group of one).
template <batch_layout Layout, vector_like Scores, class Groups, class Advantages>
requires mutable_token_tensor_for<std::remove_reference_t<Advantages>, Layout>
    group_advantage_stats opo_advantages(const Layout& layout, const Scores& scores,
                                         const Groups& groups, Advantages&& advantages_out,
                                         const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "opo_advantages";
  return detail::broadcast_group_advantages<Layout, Scores, Groups>(
      function, layout, scores, advantages_out, ctx, [&](const auto& sv, const auto& seq) {
        const index_t num_groups = detail::validate_groups(function, groups, sv.size);
        auto length_buffer = ctx.template allocate<double>(sv.size);
        ctx.reduce_rows(layout, length_buffer.data(), detail::valid_token_count<Layout>{layout});
        const vector_view<const double, typename Layout::space> lengths{length_buffer.data(),
                                                                        sv.size, 1};
        ctx.for_each(
            num_groups,
            detail::opo_group_kernel<Groups, std::decay_t<decltype(sv)>, decltype(lengths),
                                     std::decay_t<decltype(seq)>>{groups, sv, lengths, seq});
        return detail::group_stats(ctx, num_groups, groups, sv, seq, sv.size);
      });
}

/// pass@k advantages for GRPO (Chen et al. 2025, "Pass@k training"; verl grpo_passk): in each
/// group only the best response (the first one on ties) gets s_max - s_second, divided by
/// std_g + eps when divide_by_std (default, as verl), broadcast to its valid tokens; every other
/// token gets 0. A group of one sequence is an error (empty offset groups are allowed and produce
/// nothing). Shapes: scores vector of N; advantages_out per-token.
template <batch_layout Layout, vector_like Scores, class Groups, class Advantages>
requires mutable_token_tensor_for<std::remove_reference_t<Advantages>, Layout>
    group_advantage_stats pass_at_k_advantages(const Layout& layout, const Scores& scores,
                                               const Groups& groups, Advantages&& advantages_out,
                                               const pass_at_k_options& options = {},
                                               const detail::context_for<Layout>& ctx = {}) {
  constexpr const char* function = "pass_at_k_advantages";
  return detail::broadcast_group_advantages<Layout, Scores, Groups>(
      function, layout, scores, advantages_out, ctx, [&](const auto& sv, const auto& seq) {
        const index_t num_groups = detail::validate_groups(function, groups, sv.size);
        detail::require_positive_eps(function, "options.eps", options.eps);
        detail::require_std_kind(function, "options.std_kind", options.std_kind);
        const index_t singletons =
            ctx.reduce(num_groups, index_t{0}, detail::singleton_group_flag<Groups>{groups});
        detail::require(singletons == 0, function, "groups",
                        "expected every group to hold at least 2 sequences, got ", singletons,
                        " group(s) of size 1");
        ctx.for_each(num_groups,
                     detail::pass_at_k_group_kernel<Groups, std::decay_t<decltype(sv)>,
                                                    std::decay_t<decltype(seq)>>{
                         groups, sv, seq, options.divide_by_std, options.std_kind, options.eps});
        return detail::group_stats(ctx, num_groups, groups, sv, seq, sv.size);
      });
}

} // namespace rlcore

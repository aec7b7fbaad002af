// Pieces shared by the advantage estimators: argument checks, the per-sequence -> per-token
// broadcast, the zero-spread group flags and the metrics over per-sequence advantages.
#pragma once

#include "../backend/host/execution.hpp"
#include "../config.hpp"
#include "../error.hpp"
#include "../execution.hpp"
#include "../math/functions.hpp"
#include "../math/stats.hpp"
#include "../tensor/concepts.hpp"
#include "../tensor/groups.hpp"
#include "../tensor/layout.hpp"
#include "../tensor/views.hpp"

#include <cmath>
#include <concepts>
#include <type_traits>

namespace rlcore {

/// Metrics of a group-relative estimator.
struct group_advantage_stats {
  index_t num_groups = 0;          ///< groups of the group layout (empty offset groups included)
  double zero_spread_fraction = 0; ///< among non-empty groups: all scores equal (size 1 counts)
  double advantage_mean = 0;       ///< over sequences (one value per sequence)
  double advantage_std = 0;        ///< over sequences, population (divides by N)
};

namespace detail {

/// Element k of a vector view as a double: the accessor the range moments read.
template <class View>
struct element_as_double {
  View view;
  RLCORE_HD double operator()(index_t k) const { return static_cast<double>(view[k]); }
};

/// The execution context type of a layout.
template <class Layout>
using context_for = execution_context<typename Layout::space>;

/// True when a group layout can be read in memory space `Space` (uniform groups hold no memory).
template <class Groups, class Space>
struct groups_in_space : std::true_type {};
template <class Offset, class GroupSpace, class Space>
struct groups_in_space<offset_groups<Offset, GroupSpace>, Space>
    : std::bool_constant<std::same_as<GroupSpace, Space>> {};

/// Compile-time check that per-sequence views and groups live in the algorithm's memory space
/// (host and device data cannot be mixed; the layout checks its per-token tensors itself).
template <class Space, class Groups, class... Views>
constexpr void static_check_spaces() {
  static_assert(groups_in_space<Groups, Space>::value,
                "rlcore: the group offsets live in a different memory space than the data");
  static_assert((std::same_as<typename Views::space, Space> && ...),
                "rlcore: a per-sequence tensor lives in a different memory space than the data");
}

/// eps must be finite and > 0.
inline void require_positive_eps(const char* function, const char* argument, double eps) {
  require(std::isfinite(eps) && eps > 0, function, argument, "expected a finite value > 0, got ",
          eps);
}

/// A std_kind option must be one of its enumerators.
inline void require_std_kind(const char* function, const char* argument, std_kind kind) {
  require(kind == std_kind::unbiased || kind == std_kind::population, function, argument,
          "expected unbiased or population, got ", static_cast<int>(kind));
}

/// A discount-like factor must lie in [0, 1].
inline void require_unit_interval(const char* function, const char* argument, double value) {
  require(value >= 0 && value <= 1, function, argument, "expected a value in [0, 1], got ", value);
}

/// A per-sequence vector must hold N entries.
inline void require_sequence_count(const char* function, const char* argument, index_t size,
                                   index_t num_sequences) {
  require(size == num_sequences, function, argument, "expected N = ", num_sequences,
          " entries (one per sequence), got ", size);
}

/// Flat index of token slot (i, t) in a buffer of layout.token_slots() elements.
template <class Layout>
RLCORE_HD constexpr index_t token_slot(const Layout& layout, index_t i, index_t t) {
  if constexpr (Layout::is_packed) {
    return layout.row_begin(i) + t;
  } else {
    return i * layout.cols() + t;
  }
}

/// values[i] = finite_cast<T>(values[i]): per-sequence results saturated to the range of the
/// token output type T before broadcast_to_tokens casts them (once per sequence, not per token).
template <class T, class Values>
struct saturate_to_output_type {
  Values values;
  RLCORE_HD void operator()(index_t i) const {
    values[i] = static_cast<double>(math::finite_cast<T>(static_cast<double>(values[i])));
  }
};

/// out(i, t) = valid(i, t) ? per_sequence[i] : 0 (a select: masked tokens get exactly 0).
template <class Layout, class Out, class Values>
struct broadcast_to_tokens {
  Layout layout;
  Out out;
  Values per_sequence;
  RLCORE_HD void operator()(index_t i, index_t t) const {
    using T = typename Out::value_type;
    out(i, t) = layout.valid(i, t) ? static_cast<T>(per_sequence[i]) : T(0);
  }
};

/// Saturates the per-sequence double results `seq` to the token output type of `out`, then
/// broadcasts them to the valid tokens (0 at masked ones).
template <class Layout, class Out, class Values, class Context>
void saturate_and_broadcast(const Layout& layout, const Out& out, const Values& seq,
                            const Context& ctx) {
  using T = typename Out::value_type;
  ctx.for_each(seq.size, saturate_to_output_type<T, Values>{seq});
  ctx.for_each_token(layout, broadcast_to_tokens<Layout, Out, Values>{layout, out, seq});
}

/// 1 if group g is non-empty and every score in it is equal (size-1 groups included).
template <class Groups, class Scores>
struct zero_spread_flag {
  Groups groups;
  Scores scores;
  RLCORE_HD double operator()(index_t g) const {
    const index_t begin = groups.begin(g);
    const index_t end = groups.end(g);
    if (end <= begin) {
      return 0.0;
    }
    for (index_t k = begin + 1; k < end; ++k) {
      if (!(scores[k] == scores[begin])) {
        return 0.0;
      }
    }
    return 1.0;
  }
};

/// 1 for a non-empty group.
template <class Groups>
struct non_empty_group_flag {
  Groups groups;
  RLCORE_HD double operator()(index_t g) const {
    return groups.end(g) > groups.begin(g) ? 1.0 : 0.0;
  }
};

/// Pass-1 / pass-2 terms of a per-sequence vector.
template <class Values>
struct sequence_first_pass {
  Values values;
  RLCORE_HD math::moment_sums operator()(index_t i) const {
    return math::first_pass_term(static_cast<double>(values[i]));
  }
};
template <class Values>
struct sequence_second_pass {
  Values values;
  double first_mean;
  int level; ///< pass 1's unit level
  RLCORE_HD math::moment_sums operator()(index_t i) const {
    return math::second_pass_term(static_cast<double>(values[i]), first_mean, level);
  }
};

/// Mean and std (kind) of a per-sequence vector of n values, two passes through the context
/// (plain values, saturated, and the same in units: math/stats.hpp).
template <class Context, class Values>
math::range_moments_result sequence_moments(const Context& ctx, index_t n, const Values& values,
                                            std_kind kind) {
  const math::moment_sums pass1 =
      ctx.reduce(n, math::moment_sums{}, sequence_first_pass<Values>{values});
  const double m1 = math::first_mean(pass1);
  const math::moment_sums pass2 =
      ctx.reduce(n, math::moment_sums{}, sequence_second_pass<Values>{values, m1, pass1.level});
  return math::moments_from_sums(pass1, pass2, kind);
}

/// Fraction of non-empty groups whose scores are all equal (0 when every group is empty).
template <class Context, class Groups, class Scores>
double zero_spread_fraction(const Context& ctx, index_t num_groups, const Groups& groups,
                            const Scores& scores) {
  const double flagged =
      ctx.reduce(num_groups, 0.0, zero_spread_flag<Groups, Scores>{groups, scores});
  const double non_empty = ctx.reduce(num_groups, 0.0, non_empty_group_flag<Groups>{groups});
  return non_empty > 0 ? flagged / non_empty : 0.0;
}

/// Stats of a group estimator from its scores and per-sequence advantages.
template <class Context, class Groups, class Scores, class Advantages>
group_advantage_stats group_stats(const Context& ctx, index_t num_groups, const Groups& groups,
                                  const Scores& scores, const Advantages& advantages,
                                  index_t num_sequences) {
  group_advantage_stats stats;
  stats.num_groups = num_groups;
  stats.zero_spread_fraction = zero_spread_fraction(ctx, num_groups, groups, scores);
  const auto m = sequence_moments(ctx, num_sequences, advantages, std_kind::population);
  stats.advantage_mean = m.mean;
  stats.advantage_std = m.stddev;
  return stats;
}

} // namespace detail
} // namespace rlcore

// Groups of sequences: the G responses sampled for one prompt.
//
//   uniform_groups{G}           group g holds sequences [g * G, (g + 1) * G); N % G == 0.
//   offset_groups{offsets}      group g holds sequences [offsets[g], offsets[g + 1]); the
//                               num_groups + 1 offsets are non-decreasing, offsets[0] == 0 and
//                               offsets[num_groups] == N. Empty groups are allowed (they hold no
//                               sequence and produce nothing).
#pragma once

#include "../config.hpp"
#include "../error.hpp"
#include "concepts.hpp"
#include "layout.hpp"
#include "views.hpp"

#include <type_traits>

namespace rlcore {

/// Every group has the same size G.
struct uniform_groups {
  index_t size = 1;

  [[nodiscard]] RLCORE_HD constexpr index_t count(index_t num_sequences) const {
    return num_sequences / size;
  }
  [[nodiscard]] RLCORE_HD constexpr index_t begin(index_t g) const { return g * size; }
  [[nodiscard]] RLCORE_HD constexpr index_t end(index_t g) const { return (g + 1) * size; }
};

/// Groups given by offsets over sequences (num_groups + 1 entries).
template <class Offset, memory_space Space = host_space>
struct offset_groups {
  vector_view<const Offset, Space> offsets;

  [[nodiscard]] RLCORE_HD constexpr index_t count(index_t) const { return offsets.size - 1; }
  [[nodiscard]] RLCORE_HD constexpr index_t begin(index_t g) const {
    return static_cast<index_t>(offsets[g]);
  }
  [[nodiscard]] RLCORE_HD constexpr index_t end(index_t g) const {
    return static_cast<index_t>(offsets[g + 1]);
  }
};

/// Groups from host offsets (num_groups + 1 entries over sequences).
template <vector_like O>
requires std::same_as<memory_space_of<const O>, host_space>
auto group_offsets(const O& offsets) {
  auto o = as_vector_view(offsets);
  using Off = typename decltype(o)::value_type;
  static_assert(std::is_integral_v<Off>, "rlcore::group_offsets: offsets must be integers");
  vector_view<const Off, host_space> oc{o.data, o.size, o.stride};
  detail::validate_host_offsets("group_offsets", "group_offsets", oc);
  return offset_groups<Off, host_space>{oc};
}

/// A group layout: uniform_groups or offset_groups.
template <class G>
concept group_layout = requires(const G& g, index_t i) {
  { g.count(i) } -> std::convertible_to<index_t>;
  { g.begin(i) } -> std::convertible_to<index_t>;
  { g.end(i) } -> std::convertible_to<index_t>;
};

/// How a group layout is checked against N sequences: `validate(function, groups, N)` throws
/// rlcore::invalid_argument naming `groups` when the layout does not cover exactly N sequences and
/// returns the number of groups. Uniform groups and host offsets are handled here; the CUDA
/// backend (backend/cuda/layout.cuh) specialises it for device offsets. A class template rather
/// than overloads, so that a backend's specialisation is found whatever the include order.
template <class Groups>
struct group_validation; // no definition: not a group layout rlcore knows how to check

template <>
struct group_validation<uniform_groups> {
  static index_t validate(const char* function, const uniform_groups& groups,
                          index_t num_sequences) {
    detail::require(groups.size >= 1, function, "groups", "expected group size G >= 1, got ",
                    groups.size);
    detail::require(num_sequences % groups.size == 0, function, "groups",
                    "group size G = ", groups.size,
                    " does not divide the number of sequences N = ", num_sequences);
    return num_sequences / groups.size;
  }
};

template <class Offset>
struct group_validation<offset_groups<Offset, host_space>> {
  static index_t validate(const char* function, const offset_groups<Offset, host_space>& groups,
                          index_t num_sequences) {
    detail::validate_host_offsets(function, "groups", groups.offsets);
    const auto last = static_cast<index_t>(groups.offsets[groups.offsets.size - 1]);
    detail::require(last == num_sequences, function, "groups",
                    "expected the last group offset to equal N = ", num_sequences, ", got ", last);
    return groups.offsets.size - 1;
  }
};

namespace detail {

/// Checks a group layout against N sequences; returns the number of groups.
template <class Groups>
index_t validate_groups(const char* function, const Groups& groups, index_t num_sequences) {
  return group_validation<Groups>::validate(function, groups, num_sequences);
}

} // namespace detail
} // namespace rlcore

// Batch layouts: how per-token data of N sequences is laid out, and how sequences form groups.
//
//  padded_layout  N x T matrices with a mask m[i, t] (any arithmetic type, valid when != 0).
//                 A mask of 0 may sit inside a response (multi-turn observation tokens).
//                 Without a mask every token of the N x T batch is valid.
//  packed_layout  the tokens of sequence i are flat[offsets[i] .. offsets[i + 1]) of one flat
//                 buffer; offsets has N + 1 entries, offsets[0] == 0, non-decreasing
//                 (cu_seqlens). An optional flat mask marks interior observation tokens.
//  groups         the responses to one prompt: uniform_groups{G} (N % G == 0, group g holds
//                 sequences [g * G, (g + 1) * G)) or offset_groups over sequences (num_groups + 1
//                 non-decreasing offsets, offsets[0] == 0, offsets[last] == N; empty groups
//                 allowed).
//
// A layout binds user tensors into views after checking their shapes, so generic algorithms index
// every per-token tensor as x(i, t) with t < row_length(i), whatever the layout.
#pragma once

#include "../config.hpp"
#include "../error.hpp"
#include "concepts.hpp"
#include "memory_space.hpp"
#include "views.hpp"

#include <concepts>
#include <type_traits>

namespace rlcore {

/// Padded batch: N rows of T tokens and an optional mask (nullptr data = all tokens valid).
template <class Mask, memory_space Space = host_space>
struct padded_layout {
  using space = Space;
  using mask_type = Mask;
  static constexpr bool is_packed = false;

  matrix_view<const Mask, Space> mask; ///< N x T; data may be null (all valid)

  [[nodiscard]] RLCORE_HD constexpr index_t rows() const { return mask.rows; }
  [[nodiscard]] RLCORE_HD constexpr index_t cols() const { return mask.cols; }
  /// Number of token slots of row i (valid or not).
  [[nodiscard]] RLCORE_HD constexpr index_t row_length(index_t) const { return mask.cols; }
  /// Total number of token slots (valid or not).
  [[nodiscard]] RLCORE_HD constexpr index_t token_slots() const { return mask.rows * mask.cols; }
  [[nodiscard]] RLCORE_HD constexpr bool valid(index_t i, index_t t) const {
    return mask.data == nullptr || mask(i, t) != Mask(0);
  }

  /// Binds a per-token tensor (an N x T matrix_like) after checking its shape.
  template <matrix_like X>
  auto bind(const char* function, const char* argument, X& x) const {
    auto v = as_matrix_view(x);
    static_assert(std::same_as<typename decltype(v)::space, Space>,
                  "rlcore: a tensor's memory space differs from the layout's");
    detail::require(v.rows == rows() && v.cols == cols(), function, argument, "expected shape (",
                    rows(), ", ", cols(), ") to match the mask, got (", v.rows, ", ", v.cols, ")");
    return v;
  }
};

/// Packed batch: offsets (N + 1, of any integral type) into flat per-token buffers, optional mask.
template <class Offset, class Mask, memory_space Space = host_space>
struct packed_layout {
  using space = Space;
  using mask_type = Mask;
  using offset_type = Offset;
  static constexpr bool is_packed = true;

  vector_view<const Offset, Space> offsets; ///< N + 1 entries
  vector_view<const Mask, Space> mask;      ///< offsets[N] entries; data may be null (all valid)
  index_t total = 0;                        ///< offsets[N], read once at construction

  [[nodiscard]] RLCORE_HD constexpr index_t rows() const { return offsets.size - 1; }
  [[nodiscard]] RLCORE_HD constexpr index_t row_length(index_t i) const {
    return static_cast<index_t>(offsets[i + 1]) - static_cast<index_t>(offsets[i]);
  }
  [[nodiscard]] RLCORE_HD constexpr index_t row_begin(index_t i) const {
    return static_cast<index_t>(offsets[i]);
  }
  [[nodiscard]] RLCORE_HD constexpr index_t token_slots() const { return total; }
  [[nodiscard]] RLCORE_HD constexpr bool valid(index_t i, index_t t) const {
    return mask.data == nullptr || mask[static_cast<index_t>(offsets[i]) + t] != Mask(0);
  }

  /// Binds a per-token tensor (a flat vector_like of offsets[N] elements).
  template <vector_like X>
  auto bind(const char* function, const char* argument, X& x) const {
    auto v = as_vector_view(x);
    using V = decltype(v);
    static_assert(std::same_as<typename V::space, Space>,
                  "rlcore: a tensor's memory space differs from the layout's");
    detail::require(v.size == total, function, argument, "expected ", total,
                    " packed tokens (offsets[N]), got ", v.size);
    return packed_token_view<typename V::element_type, Space, Offset>{v, offsets.data};
  }
};

namespace detail {

/// Checks packed offsets on the host: N + 1 >= 1 entries, contiguous, offsets[0] == 0,
/// non-decreasing. Returns offsets[N].
template <class Offset>
index_t validate_host_offsets(const char* function, const char* argument,
                              vector_view<const Offset, host_space> offsets) {
  require(offsets.size >= 1, function, argument, "expected at least 1 entry (N + 1 offsets), got ",
          offsets.size);
  require(offsets.stride == 1, function, argument, "expected contiguous offsets (stride 1), got ",
          "stride ", offsets.stride);
  require(offsets[0] == Offset(0), function, argument, "expected offsets[0] == 0, got ",
          +offsets[0]);
  for (index_t i = 0; i + 1 < offsets.size; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      throw_invalid(function, argument, "expected non-decreasing offsets, got offsets[", i,
                    "] = ", +offsets[i], " > offsets[", i + 1, "] = ", +offsets[i + 1]);
    }
  }
  return static_cast<index_t>(offsets[offsets.size - 1]);
}

} // namespace detail

/// Padded layout over an N x T mask (valid where mask != 0).
template <matrix_like M>
auto padded(const M& mask) {
  auto v = as_matrix_view(mask);
  using E = typename decltype(v)::value_type;
  static_assert(std::is_arithmetic_v<E>, "rlcore::padded: the mask must have arithmetic elements");
  using S = typename decltype(v)::space;
  detail::require(v.rows >= 0 && v.cols >= 0, "padded", "mask",
                  "expected non-negative shape, got (", v.rows, ", ", v.cols, ")");
  return padded_layout<E, S>{
      matrix_view<const E, S>{v.data, v.rows, v.cols, v.row_stride, v.col_stride}};
}

/// Padded layout of N x T tokens, all valid (no mask).
template <memory_space Space = host_space>
padded_layout<unsigned char, Space> padded_unmasked(index_t rows, index_t cols) {
  detail::require(rows >= 0 && cols >= 0, "padded_unmasked", "rows/cols",
                  "expected non-negative shape, got (", rows, ", ", cols, ")");
  return {matrix_view<const unsigned char, Space>{nullptr, rows, cols, cols, 1}};
}

/// Packed layout from host offsets (N + 1 entries) with every token valid.
template <vector_like O>
requires std::same_as<memory_space_of<const O>, host_space>
auto packed(const O& offsets) {
  auto o = as_vector_view(offsets);
  using Off = typename decltype(o)::value_type;
  static_assert(std::is_integral_v<Off>, "rlcore::packed: offsets must be integers");
  vector_view<const Off, host_space> oc{o.data, o.size, o.stride};
  const index_t total = detail::validate_host_offsets("packed", "offsets", oc);
  return packed_layout<Off, unsigned char, host_space>{oc, {}, total};
}

/// Packed layout from host offsets (N + 1 entries) and a flat mask of offsets[N] entries.
template <vector_like O, vector_like M>
requires std::same_as<memory_space_of<const O>, host_space>
auto packed(const O& offsets, const M& mask) {
  auto o = as_vector_view(offsets);
  auto m = as_vector_view(mask);
  using Off = typename decltype(o)::value_type;
  using E = typename decltype(m)::value_type;
  static_assert(std::is_integral_v<Off>, "rlcore::packed: offsets must be integers");
  static_assert(std::is_arithmetic_v<E>, "rlcore::packed: the mask must have arithmetic elements");
  static_assert(std::same_as<typename decltype(m)::space, host_space>,
                "rlcore::packed: offsets and mask must live in the same memory space");
  vector_view<const Off, host_space> oc{o.data, o.size, o.stride};
  const index_t total = detail::validate_host_offsets("packed", "offsets", oc);
  detail::require(m.size == total, "packed", "mask", "expected ", total,
                  " entries (offsets[N]), got ", m.size);
  return packed_layout<Off, E, host_space>{
      oc, vector_view<const E, host_space>{m.data, m.size, m.stride}, total};
}

/// A batch layout: padded_layout or packed_layout (or a user layout with the same members).
template <class L>
concept batch_layout = requires(const L& l, index_t i) {
  typename L::space;
  { L::is_packed } -> std::convertible_to<bool>;
  { l.rows() } -> std::convertible_to<index_t>;
  { l.row_length(i) } -> std::convertible_to<index_t>;
  { l.valid(i, i) } -> std::convertible_to<bool>;
  { l.token_slots() } -> std::convertible_to<index_t>;
};

/// A tensor that `layout` can bind as per-token data (an N x T matrix for padded layouts, a flat
/// vector of offsets[N] elements for packed ones).
template <class X, class Layout>
concept token_tensor_for = requires(const Layout& layout, X& x) {
  layout.bind("", "", x);
};

/// A writable per-token tensor for `layout`.
template <class X, class Layout>
concept mutable_token_tensor_for = token_tensor_for<X, Layout> && requires(const Layout& layout,
                                                                           X& x) {
  requires !std::is_const_v<
      std::remove_reference_t<decltype(layout.bind("", "", x)(index_t{0}, index_t{0}))>>;
};

} // namespace rlcore

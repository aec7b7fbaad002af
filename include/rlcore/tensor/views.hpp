// Non-owning strided views over raw memory: the common currency of every algorithm.
//
//   matrix_view<T, Space>   rows x cols, element (i, t) at data[i * row_stride + t * col_stride]
//   vector_view<T, Space>   size elements, element i at data[i * stride]
//
// Views are trivially copyable, so they are passed by value into host loops and CUDA kernels alike.
// Strides are in elements (not bytes) and may be any non-negative value; this covers row-major,
// column-major, Eigen::Map with OuterStride/InnerStride, and sub-blocks of a larger buffer.
#pragma once

#include "../config.hpp"
#include "memory_space.hpp"

#include <type_traits>

namespace rlcore {

template <class T, memory_space Space = host_space>
struct matrix_view {
  using value_type = std::remove_cv_t<T>;
  using element_type = T;
  using space = Space;

  T* data = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t row_stride = 0; ///< elements between (i, t) and (i + 1, t)
  index_t col_stride = 1; ///< elements between (i, t) and (i, t + 1)

  RLCORE_HD constexpr T& operator()(index_t i, index_t t) const {
    return data[i * row_stride + t * col_stride];
  }
  [[nodiscard]] RLCORE_HD constexpr index_t size() const { return rows * cols; }
  /// The same view with const elements.
  RLCORE_HD constexpr matrix_view<const T, Space> as_const() const {
    return {data, rows, cols, row_stride, col_stride};
  }
};

template <class T, memory_space Space = host_space>
struct vector_view {
  using value_type = std::remove_cv_t<T>;
  using element_type = T;
  using space = Space;

  T* data = nullptr;
  index_t size = 0;
  index_t stride = 1;

  RLCORE_HD constexpr T& operator[](index_t i) const { return data[i * stride]; }
  RLCORE_HD constexpr vector_view<const T, Space> as_const() const { return {data, size, stride}; }
};

/// Row-major contiguous matrix view over `data` (rows x cols).
template <memory_space Space = host_space, class T>
constexpr matrix_view<T, Space> make_matrix_view(T* data, index_t rows, index_t cols) {
  return {data, rows, cols, cols, 1};
}

/// Contiguous vector view over `data` (size elements).
template <memory_space Space = host_space, class T>
constexpr vector_view<T, Space> make_vector_view(T* data, index_t size) {
  return {data, size, 1};
}

/// A per-token tensor of a packed batch: element (i, t) is flat[offsets[i] + t].
/// Produced by packed_layout::bind; algorithms index it exactly like a matrix_view.
template <class T, memory_space Space = host_space, class Offset = index_t>
struct packed_token_view {
  using value_type = std::remove_cv_t<T>;
  using element_type = T;
  using space = Space;

  vector_view<T, Space> flat;
  const Offset* offsets = nullptr; ///< N + 1 contiguous offsets into `flat`, in Space memory

  RLCORE_HD constexpr T& operator()(index_t i, index_t t) const {
    return flat[static_cast<index_t>(offsets[i]) + t];
  }
};

} // namespace rlcore

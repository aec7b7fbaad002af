// Eigen adapter: Eigen matrices, arrays, Maps, Refs and Blocks (any type with direct access)
// become rlcore tensors, row-major or column-major, float or double, with their real strides.
// Column vectors and row vectors are also vector_like. Expressions without storage (a + b) are
// rejected by the concepts: evaluate them first.
#pragma once

#include "../../tensor/concepts.hpp"
#include "../host/execution.hpp"

#include <Eigen/Core>

#include <type_traits>

namespace rlcore {
namespace detail {

template <class D>
concept eigen_direct_access =
    std::derived_from<std::remove_cv_t<D>, Eigen::DenseBase<std::remove_cv_t<D>>> && requires(
        D& d) {
  {d.data()};
  {d.innerStride()};
  {d.outerStride()};
};

} // namespace detail

template <class D>
requires detail::eigen_direct_access<D>
struct tensor_traits<D> {
  using value_type = typename D::Scalar;
  using memory_space = host_space;
  static constexpr bool row_major = D::IsRowMajor;

  template <class X>
  static auto matrix(X& m) {
    using E = std::remove_pointer_t<decltype(m.data())>;
    // Eigen's inner stride runs along the storage order; outer stride between rows (row-major)
    // or columns (column-major).
    if constexpr (row_major) {
      return matrix_view<E, host_space>{
          m.data(), static_cast<index_t>(m.rows()), static_cast<index_t>(m.cols()),
          static_cast<index_t>(m.outerStride()), static_cast<index_t>(m.innerStride())};
    } else {
      return matrix_view<E, host_space>{
          m.data(), static_cast<index_t>(m.rows()), static_cast<index_t>(m.cols()),
          static_cast<index_t>(m.innerStride()), static_cast<index_t>(m.outerStride())};
    }
  }

  template <class X>
  requires(D::RowsAtCompileTime == 1 || D::ColsAtCompileTime == 1) static auto vector(X& v) {
    using E = std::remove_pointer_t<decltype(v.data())>;
    return vector_view<E, host_space>{v.data(), static_cast<index_t>(v.size()),
                                      static_cast<index_t>(v.innerStride())};
  }
};

} // namespace rlcore

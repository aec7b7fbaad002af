// What a tensor type must provide to be used by rlcore, and how a user type plugs in.
//
// rlcore algorithms never touch user types directly: every argument is first turned into a
// matrix_view or vector_view (views.hpp). A type T can be turned into a view in one of two ways:
//
//  1. Specialise the customisation trait `rlcore::tensor_traits<T>` with
//       using value_type   = ...;                       // float, double, ...
//       using memory_space = rlcore::host_space;        // or device_space
//       static matrix_view<E, memory_space> matrix(T&);  // for per-token (N x T) tensors, and/or
//       static vector_view<E, memory_space> vector(T&);  // for per-sequence / flat tensors
//     where E is value_type or const value_type (const for read-only types).
//  2. Or provide the members directly (structural concept), with no specialisation:
//       matrices: data(), rows(), cols(), row_stride(), col_stride()   (strides in elements)
//       vectors:  data(), size()                                       (contiguous)
//     plus an optional nested `using memory_space = ...;` (host_space if absent).
//
// The trait wins when both are available. Eigen types are handled by a trait specialisation in
// <rlcore/backend/eigen/eigen.hpp>. Views themselves are tensors.
#pragma once

#include "../config.hpp"
#include "memory_space.hpp"
#include "views.hpp"

#include <concepts>
#include <cstddef>
#include <type_traits>

namespace rlcore {

/// Customisation point: specialise for a user tensor type (see the header comment).
template <class T>
struct tensor_traits;

template <class T, memory_space S>
struct tensor_traits<matrix_view<T, S>> {
  using value_type = std::remove_cv_t<T>;
  using memory_space = S;
  static constexpr matrix_view<T, S> matrix(const matrix_view<T, S>& m) { return m; }
};

template <class T, memory_space S>
struct tensor_traits<vector_view<T, S>> {
  using value_type = std::remove_cv_t<T>;
  using memory_space = S;
  static constexpr vector_view<T, S> vector(const vector_view<T, S>& v) { return v; }
};

namespace detail {

template <class V>
struct is_matrix_view : std::false_type {};
template <class T, class S>
struct is_matrix_view<matrix_view<T, S>> : std::true_type {};
template <class V>
struct is_vector_view : std::false_type {};
template <class T, class S>
struct is_vector_view<vector_view<T, S>> : std::true_type {};

template <class T>
struct nested_space {
  using type = host_space;
};
template <class T>
requires requires {
  typename T::memory_space;
}
struct nested_space<T> {
  using type = typename T::memory_space;
};

template <class T>
using bare = std::remove_cvref_t<T>;

} // namespace detail

/// T has a tensor_traits specialisation producing a matrix_view.
template <class T>
concept has_matrix_trait = requires(T& t) {
  typename tensor_traits<detail::bare<T>>::value_type;
  typename tensor_traits<detail::bare<T>>::memory_space;
  {tensor_traits<detail::bare<T>>::matrix(t)};
  requires detail::is_matrix_view<decltype(tensor_traits<detail::bare<T>>::matrix(t))>::value;
};

/// T has a tensor_traits specialisation producing a vector_view.
template <class T>
concept has_vector_trait = requires(T& t) {
  typename tensor_traits<detail::bare<T>>::value_type;
  typename tensor_traits<detail::bare<T>>::memory_space;
  {tensor_traits<detail::bare<T>>::vector(t)};
  requires detail::is_vector_view<decltype(tensor_traits<detail::bare<T>>::vector(t))>::value;
};

/// T provides data(), rows(), cols(), row_stride(), col_stride() (strides in elements).
template <class T>
concept strided_matrix_members = requires(T& t) {
  {t.data()};
  requires std::is_pointer_v<decltype(t.data())>;
  { t.rows() } -> std::convertible_to<index_t>;
  { t.cols() } -> std::convertible_to<index_t>;
  { t.row_stride() } -> std::convertible_to<index_t>;
  { t.col_stride() } -> std::convertible_to<index_t>;
};

/// T provides contiguous data() and size() (std::vector, std::span, std::array, ...).
template <class T>
concept contiguous_vector_members = requires(T& t) {
  {t.data()};
  requires std::is_pointer_v<decltype(t.data())>;
  requires std::is_arithmetic_v<std::remove_pointer_t<decltype(t.data())>>;
  { t.size() } -> std::convertible_to<std::size_t>;
};

/// A type usable as a (rows x cols) tensor: per-token data of a padded batch, logits, masks.
template <class T>
concept matrix_like = has_matrix_trait<T> || strided_matrix_members<T>;

/// A type usable as a one-dimensional tensor: per-sequence data, offsets, packed token data.
template <class T>
concept vector_like = has_vector_trait<T> ||(contiguous_vector_members<T> && !has_matrix_trait<T>);

/// The matrix_view of a matrix_like object (the trait wins over the structural members).
template <matrix_like T>
constexpr auto as_matrix_view(T& t) {
  if constexpr (has_matrix_trait<T>) {
    return tensor_traits<detail::bare<T>>::matrix(t);
  } else {
    using E = std::remove_pointer_t<decltype(t.data())>;
    using S = typename detail::nested_space<detail::bare<T>>::type;
    return matrix_view<E, S>{t.data(), static_cast<index_t>(t.rows()),
                             static_cast<index_t>(t.cols()), static_cast<index_t>(t.row_stride()),
                             static_cast<index_t>(t.col_stride())};
  }
}

/// The vector_view of a vector_like object (the trait wins over the structural members).
template <vector_like T>
constexpr auto as_vector_view(T& t) {
  if constexpr (has_vector_trait<T>) {
    return tensor_traits<detail::bare<T>>::vector(t);
  } else {
    using E = std::remove_pointer_t<decltype(t.data())>;
    using S = typename detail::nested_space<detail::bare<T>>::type;
    return vector_view<E, S>{t.data(), static_cast<index_t>(t.size()), 1};
  }
}

namespace detail {
template <class T>
struct view_of;
template <class T>
requires matrix_like<T>
struct view_of<T> {
  using type = decltype(as_matrix_view(std::declval<T&>()));
};
template <class T>
requires(vector_like<T> && !matrix_like<T>) struct view_of<T> {
  using type = decltype(as_vector_view(std::declval<T&>()));
};
} // namespace detail

/// Element type (without const) of a matrix_like or vector_like type.
template <class T>
using value_type_of = typename detail::view_of<T>::type::value_type;

/// Memory space of a matrix_like or vector_like type.
template <class T>
using memory_space_of = typename detail::view_of<T>::type::space;

/// A matrix_like type whose elements can be written (outputs such as gradients).
template <class T>
concept mutable_matrix_like = matrix_like<T> && requires(T& t) {
  requires !std::is_const_v<typename decltype(as_matrix_view(t))::element_type>;
};

/// A vector_like type whose elements can be written.
template <class T>
concept mutable_vector_like = vector_like<T> && requires(T& t) {
  requires !std::is_const_v<typename decltype(as_vector_view(t))::element_type>;
};

/// A floating-point element type rlcore computes in (float or double).
template <class T>
concept real_scalar = std::same_as<T, float> || std::same_as<T, double>;

} // namespace rlcore

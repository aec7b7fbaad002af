// Optional per-token arguments of the objectives: `rlcore::no_tensor` stands for "not given", and
// binds to an absent view that the fused token functors skip at compile time.
#pragma once

#include "../../config.hpp"
#include "../../tensor/layout.hpp"

#include <type_traits>

namespace rlcore {

/// Placeholder for an optional tensor argument that is not given.
struct no_tensor {};

/// The value to pass for an optional tensor argument that is not given.
inline constexpr no_tensor none{};

namespace detail {

/// The bound form of `no_tensor`.
struct absent_token_view {};

template <class V>
inline constexpr bool is_present = !std::is_same_v<std::remove_cvref_t<V>, absent_token_view>;

/// Binds an optional read-only per-token tensor (absent_token_view for `no_tensor`).
template <class Layout, class X>
auto bind_optional(const Layout& layout, const char* function, const char* argument, X& x) {
  if constexpr (std::is_same_v<std::remove_cvref_t<X>, no_tensor>) {
    return absent_token_view{};
  } else {
    return layout.bind(function, argument, x);
  }
}

} // namespace detail
} // namespace rlcore

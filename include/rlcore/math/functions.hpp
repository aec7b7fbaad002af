// Elementary functions usable in host and device code, for float and double. Every formula in
// math/ calls these (never std:: directly), so one definition serves the CPU and the GPU.
#pragma once

#include "../config.hpp"

#include <cmath>
#include <type_traits>

namespace rlcore::math {

template <class T>
concept real = std::is_same_v<T, float> || std::is_same_v<T, double>;

template <real T>
RLCORE_HD inline T exp(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return ::expf(x);
  } else {
    return ::exp(x);
  }
}
template <real T>
RLCORE_HD inline T expm1(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return ::expm1f(x);
  } else {
    return ::expm1(x);
  }
}
template <real T>
RLCORE_HD inline T log(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return ::logf(x);
  } else {
    return ::log(x);
  }
}
template <real T>
RLCORE_HD inline T log1p(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return ::log1pf(x);
  } else {
    return ::log1p(x);
  }
}
template <real T>
RLCORE_HD inline T sqrt(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return ::sqrtf(x);
  } else {
    return ::sqrt(x);
  }
}
template <real T>
RLCORE_HD constexpr T abs(T x) {
  return x < T(0) ? -x : x;
}
template <real T>
RLCORE_HD constexpr T min(T a, T b) {
  return b < a ? b : a;
}
template <real T>
RLCORE_HD constexpr T max(T a, T b) {
  return a < b ? b : a;
}
/// clamp(x, lo, hi) = min(max(x, lo), hi); NaN propagates.
template <real T>
RLCORE_HD constexpr T clamp(T x, T lo, T hi) {
  return x < lo ? lo : (hi < x ? hi : x);
}
/// sign(x) in {-1, 0, 1}.
template <real T>
RLCORE_HD constexpr T sign(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}
template <real T>
RLCORE_HD inline bool isfinite(T x) {
#if RLCORE_IN_DEVICE_CODE
  return ::isfinite(x);
#else
  return std::isfinite(x);
#endif
}

} // namespace rlcore::math

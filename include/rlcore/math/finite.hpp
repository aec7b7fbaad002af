// The finite range of the output types: the largest finite value and the two ways results are
// kept inside it. Scalars, RLCORE_HD: shared by the CPU algorithms and the CUDA kernels.
//
//   finite_max<T>()        the largest finite float (3.40282347e38) or double (1.797...e308)
//   saturate(x)            clamp(x, -finite_max, finite_max): inf saturates, NaN propagates
//   saturating_cast<E>(x)  x as E, saturated to E's finite range (gradients, accumulated sums)
//   finite_cast<T>(x)      x as T, finite values saturated, +-inf and NaN passed unchanged
//                          (advantages: an infinite reward still shows as inf)
#pragma once

#include "../config.hpp"
#include "functions.hpp"

#include <type_traits>

namespace rlcore::math {

/// The largest finite value of T (float or double).
template <real T>
RLCORE_HD constexpr T finite_max() {
  if constexpr (std::is_same_v<T, float>) {
    return 0x1.fffffep127F;
  } else {
    return 0x1.fffffffffffffp1023;
  }
}

/// x clamped to [-finite_max, finite_max] (inf saturates, NaN propagates).
template <real T>
RLCORE_HD inline T saturate(T x) {
  return clamp(x, -finite_max<T>(), finite_max<T>());
}

/// x as an output element of type E, saturated to E's finite range when E is a real type (a
/// double gradient stored into float, or an accumulated sum, never becomes +-inf). Other E (bf16,
/// half) convert plainly.
template <class E, real Acc>
RLCORE_HD inline E saturating_cast(Acc x) {
  if constexpr (real<E>) {
    if constexpr (sizeof(E) < sizeof(Acc)) {
      return static_cast<E>(clamp(x, Acc(-finite_max<E>()), Acc(finite_max<E>())));
    } else {
      return static_cast<E>(saturate(x));
    }
  } else {
    return static_cast<E>(x);
  }
}

/// static_cast<T>(x) with finite values beyond T's largest finite value saturated to +-that value
/// (float and double outputs; NaN and +-inf pass unchanged, other T convert plainly). An
/// advantage whose exact value is not representable in T (s - mean of scores near +-max) comes
/// out as the nearest finite value instead of inf; an infinite input still propagates.
template <class T>
RLCORE_HD inline T finite_cast(double x) {
  if constexpr (real<T>) {
    constexpr auto limit = static_cast<double>(finite_max<T>());
    const bool finite = isfinite(x);
    return static_cast<T>(finite && x > limit ? limit : (finite && x < -limit ? -limit : x));
  } else {
    return static_cast<T>(x);
  }
}

} // namespace rlcore::math

// Elementary functions usable in host and device code, for float and double. Every formula in
// math/ calls these (never std:: directly), so one definition serves the CPU and the GPU.
#pragma once

#include "../config.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
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
/// c ? a : b. On the host a bitwise blend, not a branch: with the default -ftrapping-math GCC
/// turns a floating-point ?: into control flow that blocks vectorisation; the blend keeps the loops
/// over these formulas vectorisable. Same value as ?: for every input (NaN, -0 included).
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD constexpr T select(bool c, T a, T b) {
#if RLCORE_IN_DEVICE_CODE
  return c ? a : b;
#else
  using bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  const bits mask = bits(0) - bits(c);
  return std::bit_cast<T>((std::bit_cast<bits>(a) & mask) | (std::bit_cast<bits>(b) & ~mask));
#endif
}

namespace detail {

/// e^x = e_r * 2^k for float, without a call or a branch (so that loops over it vectorise):
/// Cody-Waite range reduction x = k ln2 + r, |r| <= ln2 / 2, and a degree-7 polynomial for e^r
/// (the Cephes expf coefficients, max error ~1.5 ulp): e_r = (q + r) + 1 with
/// q = r^2 p(r) ~ e^r - 1 - r, the polynomial part. Where k == 0 (|x| < ~ln2 / 2) the reduction
/// is exact, r == x, so q is e^x - 1 - x itself, without the cancellation of e^x - 1 - x (see
/// math::kl_k3_bounded). Any x with |x| < 2^22, or NaN (e_r NaN).
struct exp_reduction {
  float e_r;
  std::int32_t k;
  float excess; ///< q = r^2 p(r) ~ e^r - 1 - r
};

RLCORE_DETAIL_FORCE_INLINE exp_reduction exp_reduce(float x) {
  // Adding 1.5 * 2^23 rounds x / ln2 to the nearest integer k held in the low mantissa bits.
  constexpr float shifter = 12582912.0f;
  const float k_shifted = x * 1.44269504088896341f + shifter;
  const float k = k_shifted - shifter;
  const std::int32_t k_int = std::bit_cast<std::int32_t>(k_shifted)
                             - std::bit_cast<std::int32_t>(shifter); // no float-to-int cast
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f; // ln2 in two parts: k * hi exact
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float excess = p * (r * r);
  return {(excess + r) + 1.0f, k_int, excess};
}

/// exp for float (see exp_reduce) over every input: 2^k applied as two exact power-of-two factors
/// so that the result underflows gradually to 0 below x = -103.97 and overflows to inf above
/// 88.72. NaN gives NaN.
RLCORE_DETAIL_FORCE_INLINE float exp_polynomial(float x) {
  x = select(x < -104.0f, -104.0f, x); // keeps k in [-150, 128]; NaN passes through
  x = select(x > 89.0f, 89.0f, x);
  exp_reduction e = exp_reduce(x);
  const std::int32_t k_half = e.k >> 1; // 2^k = 2^k_half * 2^(k - k_half), each normal
  const auto scale_low = std::bit_cast<float>(static_cast<std::uint32_t>(k_half + 127) << 23);
  const auto scale_high =
      std::bit_cast<float>(static_cast<std::uint32_t>(e.k - k_half + 127) << 23);
  return (e.e_r * scale_low) * scale_high;
}

/// exp_polynomial_bounded's value with its reduction's polynomial part (see exp_reduction).
struct exp_polynomial_split {
  float value;  ///< e^x, the bits of exp_polynomial_bounded(x)
  float excess; ///< q = r^2 p(r) ~ e^r - 1 - r; e^x - 1 - x itself where |x| < reduced_bound
  /// Below this |x|, |x / ln2| < 0.4905 rounds to k = 0: r == x exactly, so excess ~ e^x - 1 - x
  /// without cancellation (relative error ~2e-7).
  static constexpr float reduced_bound = 0.34f;
};

/// exp_polynomial_bounded(x) together with its polynomial part: for |x| <= 86 (or NaN).
RLCORE_DETAIL_FORCE_INLINE exp_polynomial_split exp_polynomial_bounded_split(float x) {
  const exp_reduction e = exp_reduce(x);
  return {e.e_r * std::bit_cast<float>(static_cast<std::uint32_t>(e.k + 127) << 23), e.excess};
}

/// exp_polynomial for |x| <= 86 (or NaN) only: no saturation, 2^k (|k| <= 124, normal) applied
/// as one factor; the same bits as exp_polynomial on that range (power-of-two products are exact).
RLCORE_DETAIL_FORCE_INLINE float exp_polynomial_bounded(float x) {
  return exp_polynomial_bounded_split(x).value;
}

} // namespace detail

/// exp as a branch-free inline polynomial on the host for float (vectorisable; ~1.5 ulp instead of
/// glibc's correctly rounded expf), math::exp everywhere else (double, device code). The hot
/// per-token formulas (surrogate ratio, k3) use it so that the host's chunked token loops
/// vectorise.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD T exp_vectorizable(T x) {
#if RLCORE_IN_DEVICE_CODE
  return exp(x);
#else
  if constexpr (std::is_same_v<T, float>) {
    return detail::exp_polynomial(x);
  } else {
    return exp(x);
  }
#endif
}

#if RLCORE_IN_DEVICE_CODE
namespace detail {

/// e^x for float in device code, |x| <= 86 (or NaN), in 5 instructions instead of expf's 8:
/// h = x log2(e) rounded to float, the rounding residual r = x - h ln2 (two FMAs with ln2 split
/// in two floats: r exact to ~1e-16, |r| <= ulp(h) ln2 / 2 <= 2.7e-6), then
/// e^x = 2^h e^r = 2^h (1 + r) with one MUFU.EX2 (PTX ex2.approx.ftz.f32, max relative error
/// 2^-22.5) and one FMA; the truncated r^2 / 2 <= 3.6e-12. Maximum relative error ~2e-7 (~2 ulp;
/// measured in tests/cuda/test_objective.cu), as expf's 2 ulp. 2^h >= 2^-125: no flush to 0.
__device__ RLCORE_DETAIL_FORCE_INLINE float exp_bounded_device(float x) {
  const float h = x * 1.44269504088896341f;
  float r = __fmaf_rn(h, -0.693147182464599609375f, x); // ln2 rounded to float
  r = __fmaf_rn(h, 1.904654323148236e-09f, r);          // + (float(ln2) - ln2)
  float p;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(p) : "f"(h));
  return __fmaf_rn(p, r, p);
}

} // namespace detail
#endif

/// exp_vectorizable for arguments known to satisfy |x| <= 86 (or NaN): log-ratios clamped to at
/// most 80, as every option that sets a log-ratio clamp enforces. Within ~2 ulp of exp there, with
/// fewer operations: on the host for float a branch-free polynomial (the same bits as
/// exp_vectorizable), on the device for float detail::exp_bounded_device (5 instructions); outside
/// that range the float result is undefined.
template <real T>
RLCORE_DETAIL_FORCE_INLINE RLCORE_HD T exp_vectorizable_bounded(T x) {
#if RLCORE_IN_DEVICE_CODE
  if constexpr (std::is_same_v<T, float>) {
    return detail::exp_bounded_device(x);
  } else {
    return exp(x);
  }
#else
  if constexpr (std::is_same_v<T, float>) {
    return detail::exp_polynomial_bounded(x);
  } else {
    return exp(x);
  }
#endif
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
  return select(x < T(0), -x, x);
}
template <real T>
RLCORE_HD constexpr T min(T a, T b) {
  return select(b < a, b, a);
}
template <real T>
RLCORE_HD constexpr T max(T a, T b) {
  return select(a < b, b, a);
}
/// clamp(x, lo, hi) = min(max(x, lo), hi); NaN propagates.
template <real T>
RLCORE_HD constexpr T clamp(T x, T lo, T hi) {
  return select(x < lo, lo, select(hi < x, hi, x));
}
/// sign(x) in {-1, 0, 1}.
template <real T>
RLCORE_HD constexpr T sign(T x) {
  return select(x > T(0), T(1), select(x < T(0), T(-1), T(0)));
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

// A fast base-2 exponential and maximum for fp32 accumulators of low-precision (bf16 / fp16)
// logits: the hot loop of the softmax kernels evaluates one exponential per logit, and the
// accurate expf (~8 instructions with its range reduction) made them instruction-bound.
//
//   exp2_fast(x) = 2^x
//     device, float:  one MUFU.EX2 (PTX ex2.approx.ftz.f32). Maximum relative error 2^-22.5
//                     (~1.7e-7, ~2 ulp; PTX ISA), results below 2^-126 flush to +0; 2^-inf = +0,
//                     2^+inf = +inf, NaN gives NaN.
//     host, float / double and device, double: the C library's exp2 (correctly rounded or within
//                     1 ulp), so CPU results do not depend on this approximation.
//   max_fast(a, b) = the larger of a and b; if one is NaN, the other (IEEE maxNum, one FMNMX on
//                    the device). Callers must detect NaN some other way (the softmax kernels
//                    do: a NaN logit makes its exponential, hence the row sum, NaN).
//
// Accuracy in the softmax statistics: each term of S = sum_j 2^(d_j) carries <= 1.7e-7 relative
// error, so S, log S and the entropy carry <= 1.7e-7 relative error from the exponential on top of
// the fp32 summation error; measured against a double reference in tests/cuda/test_logits.cu.
#pragma once

#include "../config.hpp"
#include "functions.hpp"

#include <cmath>
#include <type_traits>

namespace rlcore::math {

/// log2(e), to turn natural exponents into base-2 ones: e^x = 2^(x log2 e).
template <real T>
RLCORE_HD constexpr T log2_e() {
  return T(1.4426950408889634073599246810018921);
}

/// ln(2), to turn base-2 exponents back into natural ones: 2^y = e^(y ln 2).
template <real T>
RLCORE_HD constexpr T ln_2() {
  return T(0.6931471805599453094172321214581766);
}

/// 2^x: one MUFU.EX2 for float in device code (max relative error ~1.7e-7, flushes results below
/// 2^-126 to 0), the C library's exp2 elsewhere.
template <real T>
RLCORE_HD inline T exp2_fast(T x) {
#if RLCORE_IN_DEVICE_CODE
  if constexpr (std::is_same_v<T, float>) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
  } else {
    return ::exp2(x);
  }
#else
  if constexpr (std::is_same_v<T, float>) {
    return ::exp2f(x);
  } else {
    return ::exp2(x);
  }
#endif
}

/// log2(x) (the C library's; used once per row, not per logit).
template <real T>
RLCORE_HD inline T log2(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return ::log2f(x);
  } else {
    return ::log2(x);
  }
}

/// max(a, b), NaN-ignoring (IEEE maxNum): one instruction on the device.
template <real T>
RLCORE_HD inline T max_fast(T a, T b) {
  if constexpr (std::is_same_v<T, float>) {
    return ::fmaxf(a, b);
  } else {
    return ::fmax(a, b);
  }
}

} // namespace rlcore::math

// rlcore configuration: version, the host/device function macro and the index type.
#pragma once

#include <cstdint>

#define RLCORE_VERSION_MAJOR 0
#define RLCORE_VERSION_MINOR 1
#define RLCORE_VERSION_PATCH 0

// RLCORE_HD marks a function callable from host and device code. Under nvcc it expands to
// `__host__ __device__`; in plain C++ it is empty (the functions are still inline templates or
// marked inline where needed).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define RLCORE_HD __host__ __device__
#define RLCORE_DEVICE_COMPILER 1
#else
#define RLCORE_HD
#define RLCORE_DEVICE_COMPILER 0
#endif

// True while compiling device code (the device pass of nvcc).
#if defined(__CUDA_ARCH__)
#define RLCORE_IN_DEVICE_CODE 1
#else
#define RLCORE_IN_DEVICE_CODE 0
#endif

// Forces inlining of the per-token formulas and the objectives' token functors into the execution
// context's loops: inlined, the functors' metric accumulators stay in registers (2-3x faster on
// the CPU at -O2 than a call per token) and the host's chunked loops can vectorise.
#ifndef RLCORE_DETAIL_FORCE_INLINE
#if defined(__CUDACC__)
#define RLCORE_DETAIL_FORCE_INLINE __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define RLCORE_DETAIL_FORCE_INLINE [[gnu::always_inline]] inline
#else
#define RLCORE_DETAIL_FORCE_INLINE inline
#endif
#endif

namespace rlcore {

/// Signed index type used for every extent, stride and offset (64 bit: batches of more than
/// 2^31 tokens are routine for logits of shape N x V).
using index_t = std::int64_t;

} // namespace rlcore

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

namespace rlcore {

/// Signed index type used for every extent, stride and offset (64 bit: batches of more than
/// 2^31 tokens are routine for logits of shape N x V).
using index_t = std::int64_t;

} // namespace rlcore

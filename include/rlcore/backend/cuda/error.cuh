// CUDA error handling: every runtime call goes through RLCORE_CUDA_CHECK, which turns a failure
// into rlcore::runtime_error naming the call, the file and line, and CUDA's error string.
#pragma once

#include "../../error.hpp"

#include <cuda_runtime.h>

namespace rlcore::cuda::detail {

/// Throws rlcore::runtime_error for a failed CUDA call (`call` is its source text).
[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                          int line) {
  throw rlcore::runtime_error(
      rlcore::detail::concat("rlcore: CUDA call '", call, "' failed at ", file, ":", line, ": ",
                             cudaGetErrorName(status), ": ", cudaGetErrorString(status)));
}

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    throw_cuda_error(status, call, file, line);
  }
}

} // namespace rlcore::cuda::detail

/// Evaluates a CUDA runtime call; on failure throws rlcore::runtime_error naming the call.
#define RLCORE_CUDA_CHECK(call)                                                                    \
  ::rlcore::cuda::detail::check_cuda((call), #call, __FILE__, __LINE__)

/// Checks the last launch error (after a <<<...>>> launch), naming the kernel.
#define RLCORE_CUDA_CHECK_LAUNCH(kernel_name)                                                      \
  ::rlcore::cuda::detail::check_cuda(cudaGetLastError(), "launch of " kernel_name, __FILE__,       \
                                     __LINE__)

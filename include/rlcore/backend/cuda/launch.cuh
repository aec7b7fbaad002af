// Kernel launches through cudaLaunchKernelEx: thread-block clusters and programmatic dependent
// launch (a kernel scheduled while the previous grid of its stream ends; it waits on the device,
// kernels/grid_dependency.cuh). Private: included by the entry points' headers.
#pragma once

#include "error.cuh"

#include <atomic>
#include <cstddef>
#include <cuda_runtime.h>
#include <utility>

namespace rlcore::cuda::detail {

/// Shape and stream of one launch.
struct kernel_launch {
  unsigned grid = 1;
  unsigned threads = 1;
  std::size_t shared_bytes = 0; ///< dynamic shared memory
  cudaStream_t stream = nullptr;
  unsigned cluster = 1;   ///< CTAs per thread-block cluster (1: no cluster)
  bool dependent = false; ///< programmatic dependent of the previous launch in the stream (the
                          ///< kernel must call wait_for_prior_grids before touching memory)
};

/// True when the current device runs programmatic dependent launches (compute capability 9.0+),
/// cached per device.
inline bool dependent_launch_supported() {
  constexpr int cached_devices = 64;
  static std::atomic<int> cache[cached_devices]{}; // 0 unknown, 1 yes, 2 no
  int device = 0;
  RLCORE_CUDA_CHECK(cudaGetDevice(&device));
  const bool cacheable = device >= 0 && device < cached_devices;
  if (cacheable) {
    const int known = cache[device].load(std::memory_order_relaxed);
    if (known != 0) {
      return known == 1;
    }
  }
  int major = 0;
  RLCORE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (cacheable) {
    cache[device].store(major >= 9 ? 1 : 2, std::memory_order_relaxed);
  }
  return major >= 9;
}

/// Launches `kernel` with `l`'s shape on l.stream (cudaLaunchKernelEx: the cluster dimension when
/// l.cluster > 1, cudaLaunchAttributeProgrammaticStreamSerialization when l.dependent).
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), const kernel_launch& l, Args&&... args) {
  cudaLaunchAttribute attributes[2]{};
  unsigned count = 0;
  if (l.cluster > 1) {
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = l.cluster;
    attributes[count].val.clusterDim.y = 1;
    attributes[count].val.clusterDim.z = 1;
    ++count;
  }
  if (l.dependent) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(l.grid);
  config.blockDim = dim3(l.threads);
  config.dynamicSmemBytes = l.shared_bytes;
  config.stream = l.stream;
  config.attrs = count > 0 ? attributes : nullptr;
  config.numAttrs = count;
  RLCORE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

} // namespace rlcore::cuda::detail

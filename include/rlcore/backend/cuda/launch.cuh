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
  unsigned cluster = 0;   ///< CTAs per thread-block cluster (0: no cluster dimension; 1: clusters
                          ///< of one CTA, for kernels that use cluster instructions)
  bool dependent = false; ///< programmatic dependent of the previous launch in the stream (the
                          ///< kernel must call wait_for_prior_grids before touching memory)
};

/// Devices whose per-device answers are cached (answers for other device ids are recomputed).
inline constexpr int cached_devices = 64;

/// compute(device) for the current device, kept in `cache` (one slot per device, 0: not known
/// yet) after the first call on that device; compute must return a non-zero value.
template <class Compute>
long long cached_per_device(std::atomic<long long> (&cache)[cached_devices], Compute compute) {
  int device = 0;
  RLCORE_CUDA_CHECK(cudaGetDevice(&device));
  const bool cacheable = device >= 0 && device < cached_devices;
  if (cacheable) {
    const long long known = cache[device].load(std::memory_order_relaxed);
    if (known != 0) {
      return known;
    }
  }
  const long long value = compute(device);
  if (cacheable) {
    cache[device].store(value, std::memory_order_relaxed);
  }
  return value;
}

/// True when the current device runs programmatic dependent launches (compute capability 9.0+),
/// cached per device.
inline bool dependent_launch_supported() {
  static std::atomic<long long> cache[cached_devices]{}; // 1 yes, 2 no
  return cached_per_device(cache,
                           [](int device) {
                             int major = 0;
                             RLCORE_CUDA_CHECK(cudaDeviceGetAttribute(
                                 &major, cudaDevAttrComputeCapabilityMajor, device));
                             return major >= 9 ? 1LL : 2LL;
                           })
         == 1;
}

/// The cudaLaunchKernelEx configuration of `l`, its attributes in `attributes`: the cluster
/// dimension when l.cluster > 0, cudaLaunchAttributeProgrammaticStreamSerialization when
/// l.dependent. Also the configuration of occupancy queries (cudaOccupancyMaxActiveClusters).
inline cudaLaunchConfig_t launch_config(const kernel_launch& l,
                                        cudaLaunchAttribute (&attributes)[2]) {
  unsigned count = 0;
  if (l.cluster > 0) {
    attributes[count] = cudaLaunchAttribute{};
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = l.cluster;
    attributes[count].val.clusterDim.y = 1;
    attributes[count].val.clusterDim.z = 1;
    ++count;
  }
  if (l.dependent) {
    attributes[count] = cudaLaunchAttribute{};
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
  return config;
}

/// Launches `kernel` with `l`'s shape on l.stream (cudaLaunchKernelEx with launch_config(l)).
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), const kernel_launch& l, Args&&... args) {
  cudaLaunchAttribute attributes[2]{};
  const cudaLaunchConfig_t config = launch_config(l, attributes);
  RLCORE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

} // namespace rlcore::cuda::detail

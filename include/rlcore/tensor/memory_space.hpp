// Memory spaces: where a tensor's elements live. The space is part of every view's type, so host
// and device data cannot be mixed by accident, and it selects the executor that runs an algorithm.
#pragma once

#include <concepts>
#include <type_traits>

namespace rlcore {

/// Elements live in host memory and are processed by the CPU executor.
struct host_space {
  static constexpr const char* name = "host";
};

/// Elements live in CUDA device memory and are processed by the CUDA executor
/// (include <rlcore/backend/cuda/cuda.cuh>).
struct device_space {
  static constexpr const char* name = "device";
};

/// A memory space tag: host_space, device_space, or a user-defined tag with a `name`.
template <class S>
concept memory_space = std::is_empty_v<S> && requires {
  { S::name } -> std::convertible_to<const char*>;
};

} // namespace rlcore

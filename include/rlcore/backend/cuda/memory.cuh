// Device memory for the CUDA backend: a caller-replaceable memory resource (stream-ordered
// cudaMallocAsync / cudaFreeAsync by default) and an owning buffer allocated from it.
#pragma once

#include "../../config.hpp"
#include "../../tensor/memory_space.hpp"
#include "error.cuh"

#include <cstddef>
#include <cuda_runtime.h>
#include <utility>

namespace rlcore::cuda {

/// Where the CUDA backend takes its temporary device memory. Plain function pointers (no
/// virtuals) plus an opaque state pointer, so a caller can route allocations to a pool, PyTorch's
/// caching allocator or RMM. `allocate` returns nullptr only for 0 bytes; failures throw.
struct memory_resource {
  void* (*allocate)(std::size_t bytes, cudaStream_t stream, void* state) = nullptr;
  void (*deallocate)(void* pointer, std::size_t bytes, cudaStream_t stream, void* state) = nullptr;
  void* state = nullptr;
};

namespace detail {
inline void* stream_ordered_allocate(std::size_t bytes, cudaStream_t stream, void*) {
  void* pointer = nullptr;
  if (bytes > 0) {
    RLCORE_CUDA_CHECK(cudaMallocAsync(&pointer, bytes, stream));
  }
  return pointer;
}
inline void stream_ordered_deallocate(void* pointer, std::size_t, cudaStream_t stream, void*) {
  if (pointer != nullptr) {
    (void)cudaFreeAsync(pointer, stream); // never throws from a destructor path
  }
}
} // namespace detail

/// The default resource: cudaMallocAsync / cudaFreeAsync on the call's stream (no device sync).
inline memory_resource default_memory_resource() {
  return {&detail::stream_ordered_allocate, &detail::stream_ordered_deallocate, nullptr};
}

/// An owning array of n T in device memory, zero-filled on the stream at construction
/// (like host_buffer). Move-only; frees through the resource it came from, on its stream.
template <class T>
class device_buffer {
public:
  using memory_space = device_space; ///< so the buffer binds as a device tensor (data(), size())

  device_buffer() = default;
  device_buffer(index_t n, cudaStream_t stream,
                memory_resource resource = default_memory_resource())
      : size_(n), stream_(stream), resource_(resource) {
    if (n > 0) {
      data_ = static_cast<T*>(
          resource_.allocate(static_cast<std::size_t>(n) * sizeof(T), stream_, resource_.state));
      RLCORE_CUDA_CHECK(
          cudaMemsetAsync(data_, 0, static_cast<std::size_t>(n) * sizeof(T), stream_));
    }
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& other) noexcept { swap(other); }
  device_buffer& operator=(device_buffer&& other) noexcept {
    device_buffer moved(std::move(other));
    swap(moved);
    return *this;
  }
  ~device_buffer() {
    if (data_ != nullptr) {
      resource_.deallocate(data_, static_cast<std::size_t>(size_) * sizeof(T), stream_,
                           resource_.state);
    }
  }

  /// Device pointer to the first element.
  [[nodiscard]] T* data() const { return data_; }
  [[nodiscard]] index_t size() const { return size_; }

private:
  void swap(device_buffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(stream_, other.stream_);
    std::swap(resource_, other.resource_);
  }

  T* data_ = nullptr;
  index_t size_ = 0;
  cudaStream_t stream_ = nullptr;
  memory_resource resource_{};
};

} // namespace rlcore::cuda

// Shared helpers of the CUDA tests: device <-> host copies, random data, the check_invalid pattern.
#pragma once

#include "../common/check_invalid.hpp"

#include <rlcore/backend/cuda/cuda.cuh>
#include <rlcore/backend/cuda/kernels/grid_dependency.cuh>
#include <rlcore/backend/cuda/launch.cuh>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thrust/device_vector.h>
#include <thrust/host_vector.h>
#include <vector>

namespace rlcore_test {

template <class T>
std::vector<T> to_host(const thrust::device_vector<T>& d) {
  thrust::host_vector<T> h = d;
  return std::vector<T>(h.begin(), h.end());
}

template <class T>
thrust::device_vector<T> to_device(const std::vector<T>& h) {
  return thrust::device_vector<T>(h.begin(), h.end());
}

/// Copies source[0, n) to out after spinning `cycles` clock cycles, having let the stream's next
/// kernel be scheduled at its start (griddepcontrol.launch_dependents): a producer that still runs
/// when its programmatic dependent starts. Launch on the dependent's stream.
template <class T>
__global__ void delayed_copy(T* out, const T* source, rlcore::index_t n, long long cycles) {
  rlcore::cuda::detail::allow_dependent_grids();
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
  for (rlcore::index_t k = blockIdx.x * blockDim.x + threadIdx.x; k < n;
       k += gridDim.x * blockDim.x) {
    out[k] = source[k];
  }
}

/// Enqueues delayed_copy<<<64, 256>>> on `stream` through cudaLaunchKernelEx (a plain launch).
template <class T>
void enqueue_delayed_copy(T* out, const T* source, rlcore::index_t n, long long cycles,
                          cudaStream_t stream) {
  rlcore::cuda::detail::kernel_launch l{};
  l.grid = 64;
  l.threads = 256;
  l.stream = stream;
  rlcore::cuda::detail::launch_kernel(delayed_copy<T>, l, out, source, n, cycles);
}

/// n uniform values in [lo, hi).
template <class T>
std::vector<T> uniform(std::size_t n, double lo, double hi, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> out(n);
  for (auto& x : out) {
    x = static_cast<T>(dist(rng));
  }
  return out;
}

/// A 0/1 mask with probability p of a 1.
template <class T>
std::vector<T> bernoulli(std::size_t n, double p, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution dist(p);
  std::vector<T> out(n);
  for (auto& x : out) {
    x = dist(rng) ? T(1) : T(0);
  }
  return out;
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// |a - b| <= rel * max(|b|, floor): relative agreement with an absolute floor near zero.
inline bool close(double a, double b, double rel, double floor = 1.0) {
  const double scale = std::abs(b) > floor ? std::abs(b) : floor;
  return std::abs(a - b) <= rel * scale;
}

/// A device_vector as an rlcore rows x cols row-major matrix view in device memory.
template <class T>
auto dmat(thrust::device_vector<T>& d, rlcore::index_t rows, rlcore::index_t cols) {
  return rlcore::make_matrix_view<rlcore::device_space>(thrust::raw_pointer_cast(d.data()), rows,
                                                        cols);
}
template <class T>
auto dmat(const thrust::device_vector<T>& d, rlcore::index_t rows, rlcore::index_t cols) {
  return rlcore::make_matrix_view<rlcore::device_space>(thrust::raw_pointer_cast(d.data()), rows,
                                                        cols);
}

inline std::vector<double> as_double(const std::vector<float>& x) {
  return {x.begin(), x.end()};
}

/// max_k |gpu_k - cpu_k| / max(1, max_k |cpu_k|): the GPU's error relative to the CPU's scale.
inline double scaled_error(const std::vector<float>& gpu, const std::vector<double>& cpu) {
  double scale = 1;
  double err = 0;
  for (std::size_t k = 0; k < cpu.size(); ++k) {
    scale = std::max(scale, std::abs(cpu[k]));
    err = std::max(err, std::abs(double(gpu[k]) - cpu[k]));
  }
  return err / scale;
}

} // namespace rlcore_test

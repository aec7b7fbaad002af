// Device-side validation kernels: they only read their inputs and record the first offending
// index in a flag (atomicMin of an index: the same flag whatever the schedule), never index
// memory through an unchecked value. Private: include layout.cuh.
#pragma once

#include "../../../config.hpp"

namespace rlcore::cuda::detail {

/// No violation recorded (the flag's initial value, all bits set).
inline constexpr unsigned long long no_violation = ~0ull;

/// first_bad = the smallest i with offsets[i + 1] < offsets[i] (pairs i in [0, n_pairs)).
template <class Offset>
__global__ void find_decreasing_offset_kernel(const Offset* offsets, index_t n_pairs,
                                              unsigned long long* first_bad) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_pairs;
       i += stride) {
    if (offsets[i + 1] < offsets[i]) {
      atomicMin(first_bad, static_cast<unsigned long long>(i));
    }
  }
}

/// first_bad = the smallest k with ids[k] outside [0, vocab) (ids: n entries).
template <class Id>
__global__ void find_out_of_range_id_kernel(const Id* ids, index_t n, index_t vocab,
                                            unsigned long long* first_bad) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    const auto id = static_cast<index_t>(ids[k]);
    if (id < 0 || id >= vocab) {
      atomicMin(first_bad, static_cast<unsigned long long>(k));
    }
  }
}

} // namespace rlcore::cuda::detail

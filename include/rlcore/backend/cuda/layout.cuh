// Layouts and groups over device memory. tensor/layout.hpp's packed() and group_offsets() read
// the offsets on the host; these factories validate device offsets on the device instead (a
// kernel records the first violation, the host reads one flag) and report the same messages:
//
//   rlcore::cuda::padded(d_mask)                  padded layout over a device N x T mask
//   rlcore::cuda::padded_unmasked(N, T)           every token valid
//   rlcore::cuda::packed(d_offsets [, d_mask])    packed layout; reads offsets[N] once
//   rlcore::cuda::group_offsets(d_offsets)        offset groups over sequences
//
// Each takes an optional cudaStream_t (default: the legacy default stream) and synchronises it
// once, to read the validation flag and offsets[N].
#pragma once

#include "../../config.hpp"
#include "../../error.hpp"
#include "../../tensor/concepts.hpp"
#include "../../tensor/groups.hpp"
#include "../../tensor/layout.hpp"
#include "error.cuh"
#include "kernels/validation_kernels.cuh"
#include "memory.cuh"

#include <cuda_runtime.h>
#include <type_traits>

namespace rlcore::cuda {
namespace detail {

/// Launches `find_*` style checks: a grid-stride launch of up to 1024 blocks of 256 threads.
inline unsigned validation_grid(index_t n) {
  const index_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < 1024 ? blocks : 1024));
}

/// Device twin of rlcore::detail::validate_host_offsets: N + 1 >= 1 contiguous entries,
/// offsets[0] == 0, non-decreasing. Returns offsets[N]. Synchronises `stream` once.
template <class Offset>
index_t validate_device_offsets(const char* function, const char* argument,
                                vector_view<const Offset, device_space> offsets,
                                cudaStream_t stream) {
  using rlcore::detail::require;
  require(offsets.size >= 1, function, argument, "expected at least 1 entry (N + 1 offsets), got ",
          offsets.size);
  require(offsets.stride == 1, function, argument, "expected contiguous offsets (stride 1), got ",
          "stride ", offsets.stride);
  device_buffer<unsigned long long> flag(1, stream);
  RLCORE_CUDA_CHECK(cudaMemsetAsync(flag.data(), 0xFF, sizeof(unsigned long long), stream));
  const index_t pairs = offsets.size - 1;
  if (pairs > 0) {
    find_decreasing_offset_kernel<<<validation_grid(pairs), 256, 0, stream>>>(offsets.data, pairs,
                                                                              flag.data());
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::find_decreasing_offset_kernel");
  }
  unsigned long long first_bad = 0;
  Offset ends[2]{};
  RLCORE_CUDA_CHECK(
      cudaMemcpyAsync(&first_bad, flag.data(), sizeof(first_bad), cudaMemcpyDeviceToHost, stream));
  RLCORE_CUDA_CHECK(
      cudaMemcpyAsync(&ends[0], offsets.data, sizeof(Offset), cudaMemcpyDeviceToHost, stream));
  RLCORE_CUDA_CHECK(cudaMemcpyAsync(&ends[1], offsets.data + pairs, sizeof(Offset),
                                    cudaMemcpyDeviceToHost, stream));
  RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  require(ends[0] == Offset(0), function, argument, "expected offsets[0] == 0, got ", +ends[0]);
  if (first_bad != no_violation) {
    const auto i = static_cast<index_t>(first_bad);
    Offset pair[2]{};
    RLCORE_CUDA_CHECK(cudaMemcpyAsync(pair, offsets.data + i, 2 * sizeof(Offset),
                                      cudaMemcpyDeviceToHost, stream));
    RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
    rlcore::detail::throw_invalid(function, argument,
                                  "expected non-decreasing offsets, got offsets[", i,
                                  "] = ", +pair[0], " > offsets[", i + 1, "] = ", +pair[1]);
  }
  return static_cast<index_t>(ends[1]);
}

template <class V>
constexpr bool is_device_view = std::same_as<typename V::space, device_space>;

} // namespace detail

/// Padded layout over a device N x T mask (valid where mask != 0). No device access.
template <matrix_like M>
auto padded(const M& mask) {
  static_assert(detail::is_device_view<decltype(as_matrix_view(mask))>,
                "rlcore::cuda::padded: the mask must live in device memory");
  return rlcore::padded(mask);
}

/// Padded layout of N x T device tokens, all valid (no mask).
inline padded_layout<unsigned char, device_space> padded_unmasked(index_t rows, index_t cols) {
  return rlcore::padded_unmasked<device_space>(rows, cols);
}

/// Packed layout from device offsets (N + 1 entries), every token valid. Validates the offsets
/// on the device (rlcore::invalid_argument naming 'offsets') and reads offsets[N].
template <vector_like O>
auto packed(const O& offsets, cudaStream_t stream = nullptr) {
  auto o = as_vector_view(offsets);
  static_assert(detail::is_device_view<decltype(o)>,
                "rlcore::cuda::packed: the offsets must live in device memory");
  using Off = typename decltype(o)::value_type;
  static_assert(std::is_integral_v<Off>, "rlcore::cuda::packed: offsets must be integers");
  vector_view<const Off, device_space> oc{o.data, o.size, o.stride};
  const index_t total = detail::validate_device_offsets("packed", "offsets", oc, stream);
  return packed_layout<Off, unsigned char, device_space>{oc, {}, total};
}

/// Packed layout from device offsets (N + 1 entries) and a device flat mask of offsets[N]
/// entries (interior observation tokens have mask 0).
template <vector_like O, vector_like M>
auto packed(const O& offsets, const M& mask, cudaStream_t stream = nullptr) {
  auto o = as_vector_view(offsets);
  auto m = as_vector_view(mask);
  static_assert(detail::is_device_view<decltype(o)> && detail::is_device_view<decltype(m)>,
                "rlcore::cuda::packed: offsets and mask must live in device memory");
  using Off = typename decltype(o)::value_type;
  using E = typename decltype(m)::value_type;
  static_assert(std::is_integral_v<Off>, "rlcore::cuda::packed: offsets must be integers");
  static_assert(std::is_arithmetic_v<E>, "rlcore::cuda::packed: the mask must be arithmetic");
  vector_view<const Off, device_space> oc{o.data, o.size, o.stride};
  const index_t total = detail::validate_device_offsets("packed", "offsets", oc, stream);
  rlcore::detail::require(m.size == total, "packed", "mask", "expected ", total,
                          " entries (offsets[N]), got ", m.size);
  return packed_layout<Off, E, device_space>{
      oc, vector_view<const E, device_space>{m.data, m.size, m.stride}, total};
}

/// Groups from device offsets over sequences (num_groups + 1 entries), validated on the device.
template <vector_like O>
auto group_offsets(const O& offsets, cudaStream_t stream = nullptr) {
  auto o = as_vector_view(offsets);
  static_assert(detail::is_device_view<decltype(o)>,
                "rlcore::cuda::group_offsets: the offsets must live in device memory");
  using Off = typename decltype(o)::value_type;
  static_assert(std::is_integral_v<Off>, "rlcore::cuda::group_offsets: offsets must be integers");
  vector_view<const Off, device_space> oc{o.data, o.size, o.stride};
  (void)detail::validate_device_offsets("group_offsets", "group_offsets", oc, stream);
  return offset_groups<Off, device_space>{oc};
}

} // namespace rlcore::cuda

namespace rlcore {

/// Groups over device offsets (the host check would read device memory): the offsets are
/// validated on the device, then offsets[num_groups] == N.
template <class Offset>
struct group_validation<offset_groups<Offset, device_space>> {
  static index_t validate(const char* function, const offset_groups<Offset, device_space>& groups,
                          index_t num_sequences) {
    const index_t last =
        cuda::detail::validate_device_offsets(function, "groups", groups.offsets, nullptr);
    detail::require(last == num_sequences, function, "groups",
                    "expected the last group offset to equal N = ", num_sequences, ", got ", last);
    return groups.offsets.size - 1;
  }
};

} // namespace rlcore

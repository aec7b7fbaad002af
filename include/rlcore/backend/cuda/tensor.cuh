// Device tensors: thrust::device_vector binds as a vector_like device tensor (memory_space =
// device_space). Raw device pointers are wrapped with the ordinary views, tagged with the space:
//   rlcore::make_matrix_view<rlcore::device_space>(d_ptr, N, T)
//   rlcore::make_vector_view<rlcore::device_space>(d_ptr, n)
// A user device tensor type plugs in exactly as on the host (docs/custom-tensors.md), with
// `using memory_space = rlcore::device_space;`.
#pragma once

#include "../../config.hpp"
#include "../../tensor/concepts.hpp"
#include "../../tensor/memory_space.hpp"
#include "../../tensor/views.hpp"

#include <thrust/device_vector.h>

namespace rlcore {

template <class T, class Allocator>
struct tensor_traits<thrust::device_vector<T, Allocator>> {
  using value_type = T;
  using memory_space = device_space;
  static vector_view<T, device_space> vector(thrust::device_vector<T, Allocator>& v) {
    return {thrust::raw_pointer_cast(v.data()), static_cast<index_t>(v.size()), 1};
  }
  static vector_view<const T, device_space> vector(const thrust::device_vector<T, Allocator>& v) {
    return {thrust::raw_pointer_cast(v.data()), static_cast<index_t>(v.size()), 1};
  }
};

} // namespace rlcore

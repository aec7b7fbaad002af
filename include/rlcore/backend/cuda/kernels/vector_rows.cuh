// 16-byte row access of the fused kernels (GAE, token objective): aligned float4 loads and
// stores of 4 consecutive tokens, 4 mask bytes in one 32-bit load, and the host checks that tell
// whether a view's rows allow them. Private: included by the fused kernels' headers.
#pragma once

#include "../../../config.hpp"

#include <cstdint>
#include <type_traits>

namespace rlcore::cuda::detail {

/// Loads 4 consecutive fp32 values from a 16-byte aligned address (streaming: read once).
__device__ inline void load4(const float* p, float* out) {
  const float4 x = __ldcs(reinterpret_cast<const float4*>(p));
  out[0] = x.x;
  out[1] = x.y;
  out[2] = x.z;
  out[3] = x.w;
}

/// Stores 4 consecutive fp32 values to a 16-byte aligned address (streaming: written once).
__device__ inline void store4(float* p, const float* in) {
  __stcs(reinterpret_cast<float4*>(p), make_float4(in[0], in[1], in[2], in[3]));
}

/// The 4 mask bytes at a 4-byte aligned address as one word.
__device__ inline unsigned mask_word(const void* p) {
  return *static_cast<const unsigned*>(p);
}

/// Valid flags of the 4 mask bytes of a word: byte != 0.
__device__ inline void mask4(unsigned word, bool* out) {
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    out[b] = ((word >> (8 * b)) & 0xFFu) != 0u;
  }
}

/// Number of non-zero bytes of a mask word (0..4).
__device__ inline int count4(unsigned word) {
  return __popc(__vcmpne4(word, 0u)) / 8;
}

/// True when a per-token view is fp32, row-major with a row stride that is a multiple of 4 and
/// 16-byte aligned data: every 4 tokens starting at a multiple of 4 are one aligned float4.
template <class View>
bool float4_rows(const View& v) {
  if constexpr (requires {
                  v.row_stride;
                  v.col_stride;
                }
                && std::is_same_v<typename View::value_type, float>) {
    return v.col_stride == 1 && v.row_stride % 4 == 0
           && reinterpret_cast<std::uintptr_t>(v.data) % 16 == 0;
  } else {
    return false;
  }
}

/// True when the layout is padded with T a multiple of 4 and no mask, or a row-major 1-byte mask
/// whose rows start 4-byte aligned.
template <class Layout>
bool mask4_rows(const Layout& layout) {
  if constexpr (Layout::is_packed) {
    return false;
  } else {
    const auto& m = layout.mask;
    const bool mask_ok =
        m.data == nullptr
        || (sizeof(typename Layout::mask_type) == 1 && m.col_stride == 1 && m.row_stride % 4 == 0
            && reinterpret_cast<std::uintptr_t>(m.data) % 4 == 0);
    return layout.cols() % 4 == 0 && mask_ok;
  }
}

} // namespace rlcore::cuda::detail

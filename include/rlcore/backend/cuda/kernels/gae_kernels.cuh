// The fused GAE kernel behind rlcore::cuda::gae_advantages (advantage.cuh): one reverse scan per
// row over the composite carry maps of math/advantage.hpp (gae_carry_map), no scratch.
//
// One block per row (grid-stride over rows). A row is walked from its end in tiles of
// Threads * Items tokens; thread k owns the Items consecutive tokens of chunk Threads - 1 - k of
// the tile, so cub::BlockScan's forward order over threads is the reverse order over tokens:
//   1. load r, V and the mask of the chunk (16-byte loads when the views allow it, cached in L1),
//      fold the chunk's token maps from its last token to its first (one map per thread),
//   2. exclusive block scan of the chunk maps seeded with the maps of the later tiles: the carry
//      (next value, next advantage) entering the chunk,
//   3. re-read the chunk (from L1: nothing is held in registers across the scan) and walk it
//      backwards from that carry, writing A and A + V (0 at masked slots).
// Each row is computed by one block in a fixed order, so the result does not depend on the grid
// or the stream: bitwise reproducible. Private: include advantage.cuh.
#pragma once

#include "../../../config.hpp"
#include "../../../math/advantage.hpp"
#include "vector_rows.cuh"

#include <cub/block/block_scan.cuh>

namespace rlcore::cuda::detail {

/// Composition operator of the scan: `later` covers lower thread ranks (later tokens).
struct gae_then_op {
  template <class C>
  __device__ math::gae_carry_map<C> operator()(const math::gae_carry_map<C>& later,
                                               const math::gae_carry_map<C>& earlier) const {
    return math::gae_then(later, earlier);
  }
};

/// Carries the composite map of the tiles already scanned (the later tokens) into the next one.
template <class C>
struct gae_running_prefix {
  math::gae_carry_map<C> running{};
  __device__ math::gae_carry_map<C> operator()(const math::gae_carry_map<C>& tile_aggregate) {
    const math::gae_carry_map<C> before = running;
    running = math::gae_then(running, tile_aggregate);
    return before;
  }
};

/// Loads the chunk of Items tokens of row i starting at token `first` (tokens < 0 are outside
/// the row: invalid, 0). Vectorized: 16-byte loads (first and the row length are multiples of
/// 4). The loads are volatile and cached in L1, so the second pass of the kernel re-reads the
/// chunk from L1 instead of keeping it in registers across the block scan.
template <int Items, bool Vectorized, class Layout, class Rewards, class Values>
__device__ void load_gae_chunk(const Layout& layout, const Rewards& rewards, const Values& values,
                               index_t i, index_t first, typename Rewards::value_type* r,
                               typename Values::value_type* v, bool* valid) {
  using R = typename Rewards::value_type;
  using V = typename Values::value_type;
  if constexpr (Vectorized) {
#pragma unroll
    for (int q = 0; q < Items / 4; ++q) {
      const index_t t = first + 4 * q;
      if (t >= 0) {
        const float4 rq = __ldca(reinterpret_cast<const float4*>(&rewards(i, t)));
        const float4 vq = __ldca(reinterpret_cast<const float4*>(&values(i, t)));
        r[4 * q] = rq.x;
        r[4 * q + 1] = rq.y;
        r[4 * q + 2] = rq.z;
        r[4 * q + 3] = rq.w;
        v[4 * q] = vq.x;
        v[4 * q + 1] = vq.y;
        v[4 * q + 2] = vq.z;
        v[4 * q + 3] = vq.w;
        const unsigned word = layout.mask.data != nullptr
                                  ? __ldca(reinterpret_cast<const unsigned*>(&layout.mask(i, t)))
                                  : 0xFFFFFFFFu;
        mask4(word, &valid[4 * q]);
      } else {
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          r[4 * q + b] = R(0);
          v[4 * q + b] = V(0);
          valid[4 * q + b] = false;
        }
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < Items; ++j) {
      const index_t t = first + j;
      valid[j] = t >= 0 && layout.valid(i, t);
      r[j] = t >= 0 ? rewards(i, t) : R(0);
      v[j] = t >= 0 ? values(i, t) : V(0);
    }
  }
}

/// One block per row: GAE advantages and returns (header comment). Vectorized: padded layout,
/// fp32 row-major views with row strides and T multiples of 4 and 16-byte aligned data, 1-byte
/// mask (checked by the caller); otherwise every access goes through the views.
template <int Threads, int Items, bool Vectorized, class C, class Layout, class Rewards,
          class Values, class Advantages, class Returns>
__global__ void __launch_bounds__(Threads, 2)
    gae_rows_kernel(Layout layout, Rewards rewards, Values values, Advantages advantages,
                    Returns returns, C gamma, C lambda) {
  static_assert(!Vectorized || Items % 4 == 0, "vectorized chunks are whole float4s");
  using map = math::gae_carry_map<C>;
  using block_scan = cub::BlockScan<map, Threads>;
  using R = typename Rewards::value_type;
  using V = typename Values::value_type;
  using A = typename Advantages::value_type;
  using Ret = typename Returns::value_type;
  __shared__ typename block_scan::TempStorage storage;
  constexpr index_t tile = index_t{Threads} * Items;
  const index_t chunk = index_t{Threads} - 1 - static_cast<index_t>(threadIdx.x);
  const index_t rows = layout.rows();
  for (index_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const index_t len = layout.row_length(i);
    gae_running_prefix<C> prefix;
    for (index_t end = len; end > 0; end -= tile) {
      const index_t first = end - tile + chunk * Items; // token of item 0 (may be < 0)
      map chunk_map{};
      {
        R r[Items];
        V v[Items];
        bool valid[Items];
        load_gae_chunk<Items, Vectorized>(layout, rewards, values, i, first, r, v, valid);
#pragma unroll
        for (int j = Items - 1; j >= 0; --j) {
          chunk_map = math::gae_then(chunk_map, math::gae_token_map(valid[j], gamma, lambda,
                                                                    static_cast<C>(r[j]),
                                                                    static_cast<C>(v[j])));
        }
      }
      map later{};
      block_scan(storage).ExclusiveScan(chunk_map, later, gae_then_op{}, prefix);
      C next_value = later.value;
      C next_advantage = later.advantage;
      R r[Items];
      V v[Items];
      bool valid[Items];
      load_gae_chunk<Items, Vectorized>(layout, rewards, values, i, first, r, v, valid);
      A a_out[Items];
      Ret ret_out[Items];
#pragma unroll
      for (int j = Items - 1; j >= 0; --j) {
        const C value = static_cast<C>(v[j]);
        const map token = math::gae_token_map(valid[j], gamma, lambda, static_cast<C>(r[j]), value);
        const C advantage = math::gae_advantage_after(token, next_value, next_advantage);
        a_out[j] = valid[j] ? static_cast<A>(advantage) : A(0);
        ret_out[j] = valid[j] ? static_cast<Ret>(advantage + value) : Ret(0);
        next_value = valid[j] ? value : next_value;
        next_advantage = valid[j] ? advantage : next_advantage;
      }
      if constexpr (Vectorized) {
#pragma unroll
        for (int q = 0; q < Items / 4; ++q) {
          const index_t t = first + 4 * q;
          if (t >= 0) {
            store4(&advantages(i, t), &a_out[4 * q]);
            store4(&returns(i, t), &ret_out[4 * q]);
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < Items; ++j) {
          const index_t t = first + j;
          if (t >= 0) {
            advantages(i, t) = a_out[j];
            returns(i, t) = ret_out[j];
          }
        }
      }
      __syncthreads(); // storage is reused by the next tile
    }
  }
}

} // namespace rlcore::cuda::detail

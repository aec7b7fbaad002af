// Kernels behind execution_context<device_space> (execution.cuh). Private: include execution.cuh.
//
// Determinism: every reduction has a fixed shape that depends only on the problem size (never on
// the device, the occupancy or timing): a grid-stride pass of at most reduce_max_blocks blocks
// writes one partial per block, and one block folds the partials in index order through
// cub::BlockReduce. No atomics, so the same inputs give the same bits on every run.
#pragma once

#include "../../../config.hpp"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

namespace rlcore::cuda::detail {

inline constexpr int block_threads = 256;
inline constexpr index_t reduce_max_blocks = 1024;
inline constexpr index_t max_grid_blocks = index_t{1} << 20;
inline constexpr int scan_items_per_thread = 4;

/// Number of blocks for a grid-stride loop over n elements.
inline unsigned grid_for(index_t n, index_t max_blocks) {
  const index_t blocks = (n + block_threads - 1) / block_threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < max_blocks ? blocks : max_blocks));
}

/// a += b through the accumulator's operator+= (the contract's sum).
struct accumulate_op {
  template <class Acc>
  __device__ Acc operator()(Acc a, const Acc& b) const {
    a += b;
    return a;
  }
};

/// Token slot k of a layout -> (row i, position t). Padded: row-major over N x T. Packed: the
/// last row whose offset is <= k (binary search over the N + 1 offsets; empty rows are skipped).
template <class Layout>
__device__ void slot_to_token(const Layout& layout, index_t k, index_t& i, index_t& t) {
  if constexpr (Layout::is_packed) {
    index_t lo = 0;
    index_t hi = layout.rows();
    while (hi - lo > 1) {
      const index_t mid = lo + (hi - lo) / 2;
      if (static_cast<index_t>(layout.offsets[mid]) <= k) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    i = lo;
    t = k - static_cast<index_t>(layout.offsets[lo]);
  } else {
    const index_t cols = layout.cols();
    i = k / cols;
    t = k - i * cols;
  }
}

template <class F>
struct index_source {
  F f;
  __device__ decltype(auto) operator()(index_t k) const { return f(k); }
};

/// k -> data[k]: sums an array with the reduce kernels.
template <class T>
struct array_source {
  const T* data;
  __device__ T operator()(index_t k) const { return data[k]; }
};

template <class Layout, class F>
struct token_source {
  Layout layout;
  F f;
  __device__ decltype(auto) operator()(index_t k) const {
    index_t i = 0;
    index_t t = 0;
    slot_to_token(layout, k, i, t);
    return f(i, t);
  }
};

template <class Source>
__global__ void __launch_bounds__(block_threads) for_each_kernel(index_t n, Source source) {
  const index_t stride = static_cast<index_t>(gridDim.x) * block_threads;
  for (index_t k = static_cast<index_t>(blockIdx.x) * block_threads + threadIdx.x; k < n;
       k += stride) {
    source(k);
  }
}

/// Stage 1: block b folds elements b*B + tid + j*grid*B into partials[b].
template <class Acc, class Source>
__global__ void __launch_bounds__(block_threads)
    reduce_partials_kernel(index_t n, Source source, Acc* partials) {
  using block_reduce = cub::BlockReduce<Acc, block_threads>;
  __shared__ typename block_reduce::TempStorage storage;
  Acc acc{};
  const index_t stride = static_cast<index_t>(gridDim.x) * block_threads;
  for (index_t k = static_cast<index_t>(blockIdx.x) * block_threads + threadIdx.x; k < n;
       k += stride) {
    acc += source(k);
  }
  const Acc total = block_reduce(storage).Reduce(acc, accumulate_op{});
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = total;
  }
}

/// Stage 2 (one block): result = sum of the n partials.
template <class Acc>
__global__ void __launch_bounds__(block_threads)
    reduce_final_kernel(index_t n, const Acc* partials, Acc* result) {
  using block_reduce = cub::BlockReduce<Acc, block_threads>;
  __shared__ typename block_reduce::TempStorage storage;
  Acc acc{};
  for (index_t k = threadIdx.x; k < n; k += block_threads) {
    acc += partials[k];
  }
  const Acc total = block_reduce(storage).Reduce(acc, accumulate_op{});
  if (threadIdx.x == 0) {
    *result = total;
  }
}

/// One block per row (grid-stride over rows): out[i] = sum_t f(i, t).
template <class Layout, class Acc, class F>
__global__ void __launch_bounds__(block_threads) reduce_rows_kernel(Layout layout, Acc* out, F f) {
  using block_reduce = cub::BlockReduce<Acc, block_threads>;
  __shared__ typename block_reduce::TempStorage storage;
  const index_t rows = layout.rows();
  for (index_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const index_t len = layout.row_length(i);
    Acc acc{};
    for (index_t t = threadIdx.x; t < len; t += block_threads) {
      acc += f(i, t);
    }
    const Acc total = block_reduce(storage).Reduce(acc, accumulate_op{});
    if (threadIdx.x == 0) {
      out[i] = total;
    }
    __syncthreads(); // storage is reused by the next row
  }
}

/// Carries the composite of every earlier tile of a row (the tokens after the current tile) into
/// the next tile's scan: called by the block scan with the tile's aggregate, returns the composite
/// before it.
template <class M, class Combine>
struct running_scan_prefix {
  M running;
  Combine combine;
  __device__ M operator()(const M& tile_aggregate) {
    const M before = running;
    running = combine(running, tile_aggregate);
    return before;
  }
};

/// One block per row (grid-stride over rows): the reverse scan of reverse_scan_rows as a
/// block-wide exclusive scan (cub::BlockScan, a fixed tree) over tiles of
/// block_threads * scan_items_per_thread tokens from the row's end, scan position p being token
/// t = len - 1 - p (thread k holds positions 4k .. 4k + 3 of a tile), with a running prefix
/// across tiles. The scan operator is combine(earlier position, later position) = combine(later
/// tokens, earlier token), the contract's order. Positions past the row's start hold `identity`.
template <class M, class Layout, class Element, class Combine, class Out>
__global__ void __launch_bounds__(block_threads, 2)
    reverse_scan_rows_kernel(Layout layout, M identity, Element element, Combine combine, Out out) {
  constexpr int items = scan_items_per_thread;
  constexpr index_t tile = index_t{block_threads} * items;
  using block_scan = cub::BlockScan<M, block_threads>;
  __shared__ typename block_scan::TempStorage storage;
  const index_t rows = layout.rows();
  for (index_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const index_t len = layout.row_length(i);
    running_scan_prefix<M, Combine> prefix{identity, combine};
    for (index_t base = 0; base < len; base += tile) {
      M values[items];
#pragma unroll
      for (int j = 0; j < items; ++j) {
        const index_t p = base + static_cast<index_t>(threadIdx.x) * items + j;
        values[j] = p < len ? static_cast<M>(element(i, len - 1 - p)) : identity;
      }
      M before[items];
      block_scan(storage).ExclusiveScan(values, before, combine, prefix);
#pragma unroll
      for (int j = 0; j < items; ++j) {
        const index_t p = base + static_cast<index_t>(threadIdx.x) * items + j;
        if (p < len) {
          out(i, len - 1 - p, before[j], combine(before[j], values[j]));
        }
      }
      __syncthreads(); // storage is reused by the next tile
    }
  }
}

} // namespace rlcore::cuda::detail

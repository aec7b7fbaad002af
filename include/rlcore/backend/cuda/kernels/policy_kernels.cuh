// The fused policy-objective kernels. Private: include policy.cuh.
//
// policy_rows_kernel (every form): one warp per row, persistent grid. Per row the warp sums the
// generic row pre-pass (objective/detail/policy_pass.hpp: policy_row_pass) when the options need
// it, publishes it, then runs the generic token pass (policy_token_pass) over the row, whose
// metric sums each thread keeps across its rows. One block reduction at the end: each block
// writes one partial, a second kernel folds them (execution_kernels.cuh). The grid depends only
// on N, so the result is bitwise reproducible. clipped_policy_rows_kernel: the same shape for the
// clipped surrogate (fp32, no entropy, no importance correction) with float row partials.
//
// clipped_policy_tiles_kernel: the fast path of the clipped surrogate on fp32 padded rows that
// allow 16-byte access: a warp per row, float4 loads and stores, the next row's valid count taken
// during the current row, one warp reduction per row into shared memory, one slot per chunk of
// 8-64 consecutive rows (a block's rows, added in a fixed tree), and a one-block tail kernel that
// sums the ~256 chunk slots in a fixed order (no float atomics): bitwise reproducible whatever the
// grid, block size or stream.
#pragma once

#include "../../../config.hpp"
#include "execution_kernels.cuh"
#include "grid_dependency.cuh"
#include "vector_rows.cuh"

#include "../../../math/kl.hpp"
#include "../../../math/surrogate.hpp"
#include "../../../objective/detail/policy_pass.hpp"
#include "../../../objective/metrics.hpp"

#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

namespace rlcore::cuda::detail {

inline constexpr int policy_warps_per_block = block_threads / 32;
inline constexpr index_t policy_max_blocks = 2048;
inline constexpr int policy_unroll = 4; ///< tokens per lane whose loads are in flight together

/// Asks L2 for the cache lines of row i of a per-token view (a warp covers 32 lines = 1024
/// fp32 tokens per step), so that the row's loads find it there instead of waiting on HBM one
/// warp-iteration at a time. Views of other kinds (absent, broadcast) are skipped.
template <class View>
__device__ void prefetch_row(const View& view, index_t i, index_t len, int lane) {
  if constexpr (requires {
                  view.row_stride;
                  view.col_stride;
                  view.data;
                }) {
    if (view.col_stride == 1) {
      const auto* base = reinterpret_cast<const char*>(&view(i, 0));
      const index_t bytes = len * static_cast<index_t>(sizeof(*view.data));
      for (index_t b = static_cast<index_t>(lane) * 128; b < bytes; b += 32 * 128) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(base + b));
      }
    }
  } else if constexpr (requires {
                         view.flat.data;
                         view.offsets;
                       }) {
    const auto* base = reinterpret_cast<const char*>(&view(i, 0));
    const index_t bytes = len * static_cast<index_t>(sizeof(*view.flat.data));
    for (index_t b = static_cast<index_t>(lane) * 128; b < bytes; b += 32 * 128) {
      asm volatile("prefetch.global.L2 [%0];" ::"l"(base + b));
    }
  }
}

/// Prefetches row i of every per-token input of the objective and of the layout's mask.
template <class Layout, class Views>
__device__ void prefetch_policy_row(const Layout& layout, const Views& v, index_t i, index_t len,
                                    int lane) {
  if (len <= 0) {
    return;
  }
  prefetch_row(v.log_probs, i, len, lane);
  prefetch_row(v.old_log_probs, i, len, lane);
  prefetch_row(v.advantages, i, len, lane);
  prefetch_row(v.ref_log_probs, i, len, lane);
  prefetch_row(v.entropy, i, len, lane);
  prefetch_row(v.rollout_log_probs, i, len, lane);
  if constexpr (Layout::is_packed) {
    if (layout.mask.data != nullptr) {
      const auto* base = reinterpret_cast<const char*>(&layout.mask[layout.row_begin(i)]);
      for (index_t b = static_cast<index_t>(lane) * 128; b < len; b += 32 * 128) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(base + b));
      }
    }
  } else {
    if (layout.mask.data != nullptr && layout.mask.col_stride == 1) {
      prefetch_row(layout.mask, i, len, lane);
    }
  }
}

template <class RowStats, class TokenSums, class Layout, class RowPass, class TokenPass>
__global__ void __launch_bounds__(block_threads, 3)
    policy_rows_kernel(Layout layout, RowPass row_pass, TokenPass token_pass, RowStats* row_stats,
                       TokenSums* block_sums) {
  using warp_reduce = cub::WarpReduce<RowStats>;
  using block_reduce = cub::BlockReduce<TokenSums, block_threads>;
  __shared__ typename warp_reduce::TempStorage warp_storage[policy_warps_per_block];
  __shared__ typename block_reduce::TempStorage block_storage;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t rows = layout.rows();
  TokenSums sums{};
  for (index_t i = static_cast<index_t>(blockIdx.x) * policy_warps_per_block + warp; i < rows;
       i += static_cast<index_t>(gridDim.x) * policy_warps_per_block) {
    const index_t len = layout.row_length(i);
    prefetch_policy_row(layout, token_pass.v, i, len, lane);
    if (row_stats != nullptr) {
      RowStats stats{};
      for (index_t t = lane; t < len; t += 32) {
        stats += row_pass(i, t);
      }
      stats = warp_reduce(warp_storage[warp]).Reduce(stats, accumulate_op{});
      if (lane == 0) {
        row_stats[i] = stats;
      }
      __syncwarp(); // orders the write above before the token pass reads row_stats[i]
    }
    for (index_t t = lane; t < len; t += 32) {
      sums += token_pass(i, t);
    }
  }
  const TokenSums total = block_reduce(block_storage).Reduce(sums, accumulate_op{});
  if (threadIdx.x == 0) {
    block_sums[blockIdx.x] = total;
  }
}

/// Per-row float partials of the clipped-surrogate fast path (one row's tokens of one lane).
struct clipped_row_sums {
  float policy_loss = 0;
  float kl_loss = 0;
  float valid = 0;
  float clipped_low = 0;
  float clipped_high = 0;
  float dual_clipped = 0;
  float neg_delta = 0;
  float kl_value = 0;
  float advantage = 0;
  float advantage_sq = 0;

  __device__ void add_to(rlcore::detail::policy_token_sums& s) const {
    s.policy_loss += policy_loss;
    s.kl_loss += kl_loss;
    s.valid += valid;
    s.clipped_low += clipped_low;
    s.clipped_high += clipped_high;
    s.dual_clipped += dual_clipped;
    s.neg_delta += neg_delta;
    s.kl_value += kl_value;
    s.advantage += advantage;
    s.advantage_sq += advantage_sq;
    s.importance_weight += valid; // weight 1 per valid token (no correction)
    s.entropy_kept += valid;      // no entropy masking
  }
};

/// Fast path of the fused objective for the per-token clipped surrogate (PPO / GRPO) with an
/// optional KL penalty, no entropy, no importance correction, float inputs: the same composition
/// of math/surrogate.hpp and math/kl.hpp as policy_token_pass for that configuration (tested
/// against it), with the row's valid count taken from the mask in the same warp, float partials
/// per row (folded into double sums per thread) and no per-token double arithmetic.
template <bool HasRef, class Layout, class Views, class Grad>
__global__ void __launch_bounds__(block_threads, 3)
    clipped_policy_rows_kernel(Layout layout, Views v, Grad grad,
                               rlcore::detail::policy_params<float> p,
                               rlcore::detail::policy_token_sums* block_sums) {
  using block_reduce = cub::BlockReduce<rlcore::detail::policy_token_sums, block_threads>;
  __shared__ typename block_reduce::TempStorage block_storage;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t rows = layout.rows();
  rlcore::detail::policy_token_sums sums{};
  for (index_t i = static_cast<index_t>(blockIdx.x) * policy_warps_per_block + warp; i < rows;
       i += static_cast<index_t>(gridDim.x) * policy_warps_per_block) {
    const index_t len = layout.row_length(i);
    prefetch_policy_row(layout, v, i, len, lane);
    float weight = static_cast<float>(p.weights.scale);
    if (p.weights.divide_by_row_count) {
      int count = 0;
      for (index_t t = lane; t < len; t += 32) {
        count += layout.valid(i, t) ? 1 : 0;
      }
      for (int offset = 16; offset > 0; offset /= 2) {
        count += __shfl_xor_sync(0xffffffffu, count, offset);
      }
      weight = static_cast<float>(p.weights.row_weight(static_cast<double>(count)));
    }
    clipped_row_sums row;
    // policy_unroll tokens per lane per step: every load of the step is issued before any
    // arithmetic (masked slots are loaded too, in bounds, and never used: select, not multiply).
    for (index_t base = lane; base < len; base += 32 * policy_unroll) {
      float lp[policy_unroll];
      float old[policy_unroll];
      float advantage[policy_unroll];
      float ref[policy_unroll];
      bool valid[policy_unroll];
#pragma unroll
      for (int u = 0; u < policy_unroll; ++u) {
        const index_t t = base + 32 * u;
        valid[u] = false;
        if (t < len) {
          valid[u] = layout.valid(i, t);
          lp[u] = v.log_probs(i, t);
          old[u] = v.old_log_probs(i, t);
          advantage[u] = v.advantages(i, t);
          if constexpr (HasRef) {
            ref[u] = static_cast<float>(v.ref_log_probs(i, t));
          }
        }
      }
#pragma unroll
      for (int u = 0; u < policy_unroll; ++u) {
        const index_t t = base + 32 * u;
        if (t >= len) {
          continue;
        }
        if (!valid[u]) {
          grad(i, t) = 0.0f;
          continue;
        }
        const float raw_delta = lp[u] - old[u];
        const math::clamped_value<float> delta = math::clamp_log_ratio(raw_delta, p.clamp);
        const math::surrogate_term<float> term = math::clipped_surrogate(
            delta.value, advantage[u], p.eps_low, p.eps_high, p.dual_clip, p.delta_clip);
        float gradient = weight * term.gradient * delta.gate;
        row.policy_loss += weight * term.value;
        if constexpr (HasRef) {
          math::value_and_gradient<float> kl =
              math::kl_estimate(p.kl, lp[u] - ref[u], raw_delta, p.clamp);
          if (p.kl_output_clamp) {
            kl = math::clamp_kl_output(kl, p.kl_output_min, p.kl_output_max);
          }
          row.kl_value += kl.value;
          row.kl_loss += weight * p.kl_beta * kl.value;
          gradient += weight * p.kl_beta * kl.gradient;
        }
        grad(i, t) = gradient;
        row.valid += 1.0f;
        row.clipped_low += term.clipped_low ? 1.0f : 0.0f;
        row.clipped_high += term.clipped_high ? 1.0f : 0.0f;
        row.dual_clipped += term.dual_clipped ? 1.0f : 0.0f;
        row.neg_delta -= raw_delta;
        row.advantage += advantage[u];
        row.advantage_sq += advantage[u] * advantage[u];
      }
    }
    row.add_to(sums);
  }
  const auto total = block_reduce(block_storage).Reduce(sums, accumulate_op{});
  if (threadIdx.x == 0) {
    block_sums[blockIdx.x] = total;
  }
}

/// Shape of the tiled clipped-surrogate kernel: Threads per block (a warp per row), Groups float4
/// groups (4 tokens each) per lane per step, MinBlocks resident blocks per SM asked of the
/// register allocator. Default: 2 float4 groups per lane, 2 blocks of 256 per SM (104 registers,
/// no spills): 8 float4 loads of every input in flight per lane-pair of steps, measured 1.3 to 2.1
/// points of copy bandwidth above 1 group with 64 registers and 4 blocks per SM on an H200.
template <int Threads, int Groups, int MinBlocks>
struct tile_config {
  static constexpr int threads = Threads;
  static constexpr int groups = Groups;
  static constexpr int min_blocks = MinBlocks;
};
using default_tile_config = tile_config<256, 2, 2>;

/// Longest row of the tiled kernel: its per-lane counts are 16-bit fields (a lane holds at most
/// cols / 32 tokens of a row, far below 2^16 here).
inline constexpr index_t policy_tiles_max_cols = index_t{1} << 20;

/// Per-lane sums of one row in the tiled kernel. Masked slots enter every formula as delta = 0,
/// lp - ref = 0 and A = 0, whose terms are exactly 0 for every option of this path (ratio 1, no
/// clip active, KL estimators 0 at x = 0; the KL output clamp is masked explicitly), so the float
/// sums need no per-token select. Counts are integers in 16-bit fields of one word.
struct clipped_tile_sums {
  float policy_value = 0; ///< unweighted surrogate values
  float kl_value = 0;     ///< unweighted KL values
  float neg_delta = 0;    ///< -(lp - old)
  float advantage = 0;
  float advantage_sq = 0;
  unsigned valid_next = 0; ///< valid tokens of this row | valid tokens of the next row << 16
  unsigned clipped = 0;    ///< clipped_low | clipped_high << 16
  unsigned dual_clipped = 0;
};

/// Weighted sums of a row, of a block of rows of the reduction, or of the batch, in the
/// tiled kernel: the fields of policy_token_sums that this path can make non-zero.
struct tile_sums {
  enum field : int {
    policy_loss,
    kl_loss,
    valid,
    clipped_low,
    clipped_high,
    dual_clipped,
    neg_delta,
    kl_value,
    advantage,
    advantage_sq,
    fields
  };
  double v[fields] = {};

  __device__ tile_sums& operator+=(const tile_sums& o) {
#pragma unroll
    for (int k = 0; k < fields; ++k) {
      v[k] += o.v[k];
    }
    return *this;
  }

  /// The sums in the objective's layout (importance weight 1 and entropy kept per valid token).
  [[nodiscard]] __device__ rlcore::detail::policy_token_sums objective_sums() const {
    rlcore::detail::policy_token_sums s{};
    s.policy_loss = v[policy_loss];
    s.kl_loss = v[kl_loss];
    s.valid = v[valid];
    s.clipped_low = v[clipped_low];
    s.clipped_high = v[clipped_high];
    s.dual_clipped = v[dual_clipped];
    s.neg_delta = v[neg_delta];
    s.kl_value = v[kl_value];
    s.advantage = v[advantage];
    s.advantage_sq = v[advantage_sq];
    s.importance_weight = v[valid];
    s.entropy_kept = v[valid];
    return s;
  }
};

/// Rows per chunk of the tiled kernel: a power of two in [8, 64] that depends only on the number
/// of rows (about 256 chunks for large batches, at least 8 rows so that every warp of a block of
/// up to 8 warps has a row). A chunk's sums are added in a fixed order (chunk_sum below), so the
/// result does not depend on the grid, the block size or the stream.
inline constexpr index_t policy_chunk_min_rows = 8;
inline constexpr index_t policy_chunk_max_rows = 64;
inline constexpr index_t policy_target_chunks = 256;

/// Rows per chunk for `rows` rows: 8 below 4096 rows, then doubled while ~256 chunks remain.
__host__ __device__ inline index_t policy_chunk_rows(index_t rows) {
  index_t c = policy_chunk_min_rows;
  while (c < policy_chunk_max_rows && c * 2 * policy_target_chunks <= rows) {
    c *= 2;
  }
  return c;
}

/// Number of chunks (and chunk slots) of the tiled kernel for `rows` rows.
__host__ __device__ inline index_t policy_chunks(index_t rows) {
  const index_t c = policy_chunk_rows(rows);
  return (rows + c - 1) / c;
}

/// Scratch of the tiled kernel (in the objective's temporary storage): one slot of weighted sums
/// per chunk of rows and the final sums.
struct tile_scratch {
  tile_sums* chunk_sums;
  rlcore::detail::policy_token_sums* result;
  index_t chunk_rows;
  index_t chunks;
};

/// Threads of tile_chunks_reduce_kernel.
inline constexpr int chunk_reduce_threads = 256;

/// Sums the tiled kernel's chunk slots s.chunk_sums[0, s.chunks) into *s.result with one block, in
/// an order fixed by s.chunks alone: thread j adds slots j, j + 256, ... in order (loads through
/// L2: the slots were written by other SMs), then a cub block reduction (fixed tree). Launched
/// after the tiled kernel in the same stream, on sm_90 as its programmatic dependent: the block is
/// scheduled as the tiled grid ends and waits for its completion and memory (wait_for_prior_grids)
/// before reading, which saves most of a launch gap.
__global__ void __launch_bounds__(chunk_reduce_threads) tile_chunks_reduce_kernel(tile_scratch s) {
  using block_reduce = cub::BlockReduce<tile_sums, chunk_reduce_threads>;
  __shared__ typename block_reduce::TempStorage storage;
  wait_for_prior_grids();
  allow_dependent_grids(); // the next call's tiled kernel may be scheduled (it waits likewise)
  tile_sums acc;
  for (index_t slot = threadIdx.x; slot < s.chunks; slot += chunk_reduce_threads) {
#pragma unroll
    for (int f = 0; f < tile_sums::fields; ++f) {
      acc.v[f] += __ldcg(&s.chunk_sums[slot].v[f]);
    }
  }
  const tile_sums total = block_reduce(storage).Reduce(acc, accumulate_op{});
  if (threadIdx.x == 0) {
    *s.result = total.objective_sums();
  }
}

/// Sum over the warp of a lane's row sums (butterfly for the floats, fixed order: the same bits in
/// every lane and for every launch shape; integer reductions for the counts).
struct clipped_tile_totals {
  float policy_value;
  float kl_value;
  float neg_delta;
  float advantage;
  float advantage_sq;
  unsigned valid;
  unsigned next_valid;
  unsigned clipped_low;
  unsigned clipped_high;
  unsigned dual_clipped;

  /// The row's contribution to the objective's sums: loss terms times the row weight w.
  [[nodiscard]] __device__ tile_sums weighted(double w, double kl_beta) const {
    tile_sums s;
    s.v[tile_sums::policy_loss] = w * static_cast<double>(policy_value);
    s.v[tile_sums::kl_loss] = w * kl_beta * static_cast<double>(kl_value);
    s.v[tile_sums::valid] = valid;
    s.v[tile_sums::clipped_low] = clipped_low;
    s.v[tile_sums::clipped_high] = clipped_high;
    s.v[tile_sums::dual_clipped] = dual_clipped;
    s.v[tile_sums::neg_delta] = neg_delta;
    s.v[tile_sums::kl_value] = kl_value;
    s.v[tile_sums::advantage] = advantage;
    s.v[tile_sums::advantage_sq] = advantage_sq;
    return s;
  }
};

__device__ inline clipped_tile_totals warp_sum(const clipped_tile_sums& s) {
  float f[5] = {s.policy_value, s.kl_value, s.neg_delta, s.advantage, s.advantage_sq};
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
#pragma unroll
    for (float& x : f) {
      x += __shfl_xor_sync(0xffffffffu, x, offset);
    }
  }
  constexpr unsigned all = 0xffffffffu;
  return {f[0],
          f[1],
          f[2],
          f[3],
          f[4],
          __reduce_add_sync(all, s.valid_next & 0xFFFFu),
          __reduce_add_sync(all, s.valid_next >> 16),
          __reduce_add_sync(all, s.clipped & 0xFFFFu),
          __reduce_add_sync(all, s.clipped >> 16),
          __reduce_add_sync(all, s.dual_clipped)};
}

/// Tiled fast path of the fused objective for the clipped surrogate (PPO / GRPO) with an
/// optional KL penalty, no entropy, no importance correction, fp32 padded rows that allow 16-byte
/// access (float4_rows, mask4_rows), share one row stride and have at most policy_tiles_max_cols
/// tokens: the same composition of math/surrogate.hpp and math/kl.hpp as
/// clipped_policy_rows_kernel / policy_token_pass for that configuration. Compile-time forms:
/// KlK3, the estimator is k3 (its selects fold); Plain, no dual clip, no delta clip and no KL
/// output clamp (their selects fold).
///
/// Work: a block takes chunks of scratch.chunk_rows consecutive rows (grid-stride over chunks),
/// warp w the rows w, w + warps, ... of a chunk. Per step each lane loads Config::groups float4s
/// of every input and 4-byte mask words before any arithmetic, writes the gradient with 16-byte
/// stores and keeps float sums and integer counts; the lanes also count the valid tokens of the
/// warp's next row, so its weight is known when it starts. One warp reduction per row gives the
/// row's weighted sums (10 doubles) in shared memory; at the end of a chunk (one block barrier)
/// warp 0 adds them in a fixed tree (row r + 32 onto row r, then a cub warp reduction) into the
/// chunk's slot. tile_chunks_reduce_kernel sums the chunk slots. Every order of
/// summation depends only on the rows count: bitwise reproducible for any grid, block size and
/// stream.
template <class Config, bool HasRef, bool KlK3, bool Plain, class Layout, class Views, class Grad>
__global__ void __launch_bounds__(Config::threads, Config::min_blocks)
    clipped_policy_tiles_kernel(Layout layout, Views v, Grad grad,
                                rlcore::detail::policy_params<float> p, tile_scratch scratch) {
  constexpr int G = Config::groups;
  constexpr index_t step = index_t{32} * 4 * G; // tokens per warp step
  constexpr int warps = Config::threads / 32;
  static_assert(warps <= policy_chunk_min_rows, "a chunk has a row for every warp");
  constexpr int slot_doubles = tile_sums::fields;
  // Weighted sums of the rows of the current chunk (double-buffered by chunk parity: warp 0 reads
  // one buffer after the chunk's barrier while the other warps fill the other).
  __shared__ double row_slots[2][policy_chunk_max_rows * slot_doubles];
  using chunk_reduce = cub::WarpReduce<tile_sums>;
  __shared__ typename chunk_reduce::TempStorage chunk_storage;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const index_t rows = layout.rows();
  const index_t cols = layout.cols();
  const index_t chunk_rows = scratch.chunk_rows;
  const index_t chunks = scratch.chunks;
  const bool has_mask = layout.mask.data != nullptr;
  const bool count_rows = p.weights.divide_by_row_count && has_mask;
  const kl_estimator estimator = KlK3 ? kl_estimator::k3 : p.kl;
  const float dual_clip = Plain ? 0.0f : p.dual_clip;
  const float delta_clip = Plain ? 0.0f : p.delta_clip;
  // Launched as the programmatic dependent of the stream's previous grid (policy.cuh): its memory
  // is complete past this point. The tail kernel may be scheduled now (it waits likewise).
  wait_for_prior_grids();
  allow_dependent_grids();
  // Valid tokens of the warp's first row.
  unsigned count = static_cast<unsigned>(cols);
  {
    const index_t first = static_cast<index_t>(blockIdx.x) * chunk_rows + warp;
    if (count_rows && first < rows) {
      unsigned c = 0;
      for (index_t t = index_t{lane} * 4; t < cols; t += 32 * 4) {
        c += static_cast<unsigned>(count4(mask_word(&layout.mask(first, t))));
      }
      count = __reduce_add_sync(0xffffffffu, c);
    }
  }
  int parity = 0;
  for (index_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const index_t chunk_begin = chunk * chunk_rows;
    const index_t chunk_end = chunk_begin + chunk_rows < rows ? chunk_begin + chunk_rows : rows;
    const index_t next_chunk_row = (chunk + gridDim.x) * chunk_rows + warp;
    double* slots = row_slots[parity];
    for (index_t i = chunk_begin + warp; i < chunk_end; i += warps) {
      const index_t next = i + warps < chunk_end ? i + warps : next_chunk_row;
      const bool count_next = count_rows && next < rows;
      const double weight_d = p.weights.row_weight(static_cast<double>(count));
      const auto weight = static_cast<float>(weight_d);
      const float kl_weight = weight * p.kl_beta;
      // Every view (and the mask) has col_stride 1 and the same row stride on this path: token t
      // of row i of any of them is data[row + t].
      const index_t row = i * v.log_probs.row_stride;
      const index_t next_row = next * v.log_probs.row_stride;
      clipped_tile_sums sums;
      for (index_t base = 0; base < cols; base += step) {
        float lp[G][4];
        float old[G][4];
        float adv[G][4];
        float ref[G][4];
        unsigned word[G];
        unsigned next_word[G];
#pragma unroll
        for (int g = 0; g < G; ++g) { // every load of the step before any arithmetic
          const index_t t = base + (index_t{g} * 32 + lane) * 4;
          next_word[g] = 0;
          if (t < cols) {
            load4(v.log_probs.data + row + t, lp[g]);
            load4(v.old_log_probs.data + row + t, old[g]);
            load4(v.advantages.data + row + t, adv[g]);
            if constexpr (HasRef) {
              load4(v.ref_log_probs.data + row + t, ref[g]);
            }
            word[g] = has_mask ? mask_word(layout.mask.data + row + t) : 0xFFFFFFFFu;
            if (count_next) {
              next_word[g] = mask_word(layout.mask.data + next_row + t);
            }
          }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const index_t t = base + (index_t{g} * 32 + lane) * 4;
          if (t >= cols) {
            continue;
          }
          sums.valid_next += static_cast<unsigned>(count4(word[g]))
                             + (static_cast<unsigned>(count4(next_word[g])) << 16);
          bool valid[4];
          mask4(word[g], valid);
          float gradient[4];
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            // Masked slots may hold anything (inf, NaN): they enter as delta = 0, x = 0, A = 0.
            const bool ok = valid[b];
            const float raw_delta = ok ? lp[g][b] - old[g][b] : 0.0f;
            const float advantage = ok ? adv[g][b] : 0.0f;
            const math::clamped_value<float> delta = math::clamp_log_ratio(raw_delta, p.clamp);
            const float ratio = math::exp_vectorizable_bounded(delta.value); // |delta| <= 80
            const math::surrogate_term<float> term = math::clipped_surrogate_of_ratio(
                ratio, advantage, p.eps_low, p.eps_high, dual_clip, delta_clip);
            float token_gradient = weight * term.gradient * delta.gate;
            if constexpr (HasRef) {
              const float lp_minus_ref = ok ? lp[g][b] - ref[g][b] : 0.0f;
              math::value_and_gradient<float> kl =
                  math::kl_estimate_of_ratio(estimator, lp_minus_ref, ratio, delta.gate, p.clamp);
              if constexpr (!Plain) {
                if (p.kl_output_clamp) {
                  kl = math::clamp_kl_output(kl, p.kl_output_min, p.kl_output_max);
                  kl.value = ok ? kl.value : 0.0f;
                }
              }
              sums.kl_value += kl.value;
              token_gradient += kl_weight * kl.gradient;
            }
            gradient[b] = ok ? token_gradient : 0.0f;
            sums.policy_value += term.value;
            sums.clipped += (term.clipped_low ? 1u : 0u) + (term.clipped_high ? 0x10000u : 0u);
            if constexpr (!Plain) {
              sums.dual_clipped += term.dual_clipped ? 1u : 0u;
            }
            sums.neg_delta -= raw_delta;
            sums.advantage += advantage;
            sums.advantage_sq += advantage * advantage;
          }
          store4(grad.data + row + t, gradient);
        }
      }
      const clipped_tile_totals total = warp_sum(sums);
      if (lane == 0) {
        const tile_sums weighted = total.weighted(weight_d, static_cast<double>(p.kl_beta));
#pragma unroll
        for (int f = 0; f < slot_doubles; ++f) {
          slots[(i - chunk_begin) * slot_doubles + f] = weighted.v[f];
        }
      }
      if (count_next) {
        count = total.next_valid;
      }
    }
    __syncthreads(); // the chunk's row slots are written
    if (warp == 0) {
      // Fixed tree over the chunk's n <= 64 rows: lane l adds rows l and l + 32, then a cub warp
      // reduction.
      const auto n = static_cast<int>(chunk_end - chunk_begin);
      tile_sums x;
#pragma unroll
      for (int f = 0; f < slot_doubles; ++f) {
        x.v[f] = lane < n ? slots[lane * slot_doubles + f] : 0.0;
        if (lane + 32 < n) {
          x.v[f] += slots[(lane + 32) * slot_doubles + f];
        }
      }
      const tile_sums chunk_total = chunk_reduce(chunk_storage).Reduce(x, accumulate_op{});
      if (lane == 0) {
        scratch.chunk_sums[chunk] = chunk_total;
      }
    }
    parity ^= 1;
  }
}

} // namespace rlcore::cuda::detail

// The fused GAE kernel behind rlcore::cuda::gae_advantages (advantage.cuh): one reverse scan per
// row over the segment maps of math/advantage.hpp (gae_segment_map: count, value, advantage of a
// segment's first valid token), no scratch.
//
// A row is covered by a group of Cluster CTAs (one thread-block cluster on sm_90; Cluster = 1:
// one block per row, no cluster), grid-stride over rows. The group walks the row from its end in
// rounds of Cluster chunks of Threads * Items tokens: CTA rank q takes the q-th chunk from the end
// of the round, so all Cluster chunks are loaded at once. In a chunk, thread k owns the Items
// consecutive tokens of piece Threads - 1 - k, so the forward order of a scan over threads is the
// reverse order over tokens:
//   1. load r, V and the mask of the piece into registers (16-byte loads when the views allow
//      it) and fold the piece's tokens from its last to its first (gae_fold_token: the plain
//      recurrence, one map per thread),
//   2. exclusive scan of the piece maps (gae_then, with (gamma lambda)^k from two small tables of
//      the CTA in shared memory): cub::WarpScan within each warp, then warp 0 scans the warp
//      aggregates -> the chunk's aggregate map and, per warp, the map of the later warps,
//   3. warp 0 of every CTA sends its chunk aggregate to the other CTAs of the cluster
//      (st.async into their shared memory, completing bytes on their mbarrier: no GPU-wide fence),
//      waits for theirs and composes, in the same fixed order, the map of the later
//      rounds with the aggregates of the later chunks (the chunk's prefix) and with all of them
//      (the map of the next round); it composes each warp's map with the prefix (block barrier),
//   4. every thread composes its warp's map with its exclusive map within the warp and walks its
//      piece backwards from that carry (the map applied to (0, 0)), writing A and A + V (0 at
//      masked slots).
// The composition order is the chunk order of the row, the same for every Cluster, grid and
// stream: the result is a function of the data and Threads * Items alone, bitwise reproducible
// (Cluster > 1 gives the bits of Cluster = 1). Private: include advantage.cuh.
#pragma once

#include "../../../config.hpp"
#include "../../../math/advantage.hpp"
#include "vector_rows.cuh"

#include <cub/warp/warp_scan.cuh>

namespace rlcore::cuda::detail {

/// Composition operator of the scan: `later` covers lower thread ranks (later tokens). The
/// power (gamma lambda)^k of gae_then is low[k % 64] * high[k / 64] (tables of the CTA in shared
/// memory: low[j] = (gamma lambda)^j, high[h] = (gamma lambda)^(64 h)); k < the tokens of a chunk
/// (every `earlier` lies within a chunk).
template <class C>
struct gae_then_op {
  C gamma;
  C gamma_lambda;
  const C* low;
  const C* high;
  __device__ math::gae_segment_map<C> operator()(const math::gae_segment_map<C>& later,
                                                 const math::gae_segment_map<C>& earlier) const {
    const int k = earlier.count > 0 ? earlier.count - 1 : 0;
    const C power = low[k & 63] * high[k >> 6];
    return math::gae_then(later, earlier, gamma, gamma_lambda, power);
  }
};

/// Largest number of CTAs that share a row (the portable cluster size).
inline constexpr int gae_max_cluster = 8;

/// Row i of the views, for the 16-byte path: fp32 rows with unit column stride, 1-byte mask.
struct gae_row_pointers {
  const float* rewards;
  const float* values;
  const unsigned char* mask; ///< nullptr: every token valid
  float* advantages;
  float* returns;
};

/// Loads the piece of Items tokens of row i starting at token `first` (tokens < 0 are outside
/// the row: invalid, 0), through the views (per-element path).
template <int Items, class Layout, class Rewards, class Values>
__device__ void load_gae_piece(const Layout& layout, const Rewards& rewards, const Values& values,
                               index_t i, index_t first, typename Rewards::value_type* r,
                               typename Values::value_type* v, bool* valid) {
  using R = typename Rewards::value_type;
  using V = typename Values::value_type;
#pragma unroll
  for (int j = 0; j < Items; ++j) {
    const index_t t = first + j;
    valid[j] = t >= 0 && layout.valid(i, t);
    r[j] = t >= 0 ? rewards(i, t) : R(0);
    v[j] = t >= 0 ? values(i, t) : V(0);
  }
}

/// The same from row pointers with 16-byte loads (first and the row length are multiples of 4;
/// streaming: read once).
template <int Items>
__device__ void load_gae_piece(const gae_row_pointers& row, index_t first, float* r, float* v,
                               bool* valid) {
  const float* rp = row.rewards + first;
  const float* vp = row.values + first;
  const unsigned char* mp = row.mask + first;
#pragma unroll
  for (int q = 0; q < Items / 4; ++q) {
    if (first + 4 * q >= 0) {
      load4(rp + 4 * q, &r[4 * q]);
      load4(vp + 4 * q, &v[4 * q]);
      const unsigned word =
          row.mask != nullptr ? __ldcs(reinterpret_cast<const unsigned*>(mp + 4 * q)) : ~0u;
      mask4(word, &valid[4 * q]);
    } else {
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        r[4 * q + b] = 0;
        v[4 * q + b] = 0;
        valid[4 * q + b] = false;
      }
    }
  }
}

/// Barrier of the thread-block cluster without memory ordering (barrier.cluster.arrive.relaxed:
/// no GPU-wide fence): for the exit, where it only keeps every CTA's shared memory alive until
/// the others have consumed what they read from it.
__device__ inline void gae_cluster_barrier_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::
                   : "memory");
#endif
}

/// A chunk aggregate as received from another CTA of the cluster (st.async: value and advantage
/// as one 16-byte store, count as a 4-byte store).
template <class C>
struct alignas(16) gae_received_map {
  C value;
  C advantage;
  int count;
};

/// Bytes one CTA sends to another per round (gae_exchange_aggregates).
inline constexpr unsigned gae_sent_bytes = 2 * sizeof(double) + sizeof(int);

/// Shared-memory address of a generic pointer to shared memory.
__device__ inline unsigned gae_shared_address(const void* pointer) {
  return static_cast<unsigned>(__cvta_generic_to_shared(pointer));
}

/// Initialises the CTA's two exchange barriers (arrival count 1: the CTA's own expect_tx) and
/// makes them visible to the cluster before any CTA sends (one cluster barrier, at kernel start).
__device__ inline void gae_init_exchange(unsigned long long* barriers) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0) {
    for (int b = 0; b < 2; ++b) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(gae_shared_address(&barriers[b]))
                   : "memory");
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
#else
  (void)barriers;
#endif
}

/// Step 3 of the header comment, run by warp 0 of every CTA of a group of Cluster (rank `rank`),
/// round `round` of the kernel: lanes q != rank send the chunk's aggregate to CTA q
/// (st.async into its `received[round % 2][rank]`, completing bytes on its barrier
/// `barriers[round % 2]`), then the warp waits until the Cluster - 1 aggregates sent to this CTA
/// have arrived (no GPU-wide fence, no cluster barrier: the CTAs of a cluster stay at most one
/// round apart, so two slots and barriers suffice). Returns in every lane the same compositions,
/// in chunk order: prefix = running o agg_0 o ... o agg_(rank-1) and, in `next_round`, prefix o
/// agg_rank o ... o agg_(Cluster-1) (o = gae_then).
template <int Cluster, class C>
__device__ math::gae_segment_map<C>
gae_exchange_aggregates(const math::gae_segment_map<C>& running,
                        const math::gae_segment_map<C>& aggregate, const gae_then_op<C>& then,
                        gae_received_map<C> (*received)[Cluster], unsigned long long* barriers,
                        int round, int rank, math::gae_segment_map<C>& next_round) {
  using map = math::gae_segment_map<C>;
  if constexpr (Cluster == 1) {
    (void)received;
    (void)barriers;
    (void)round;
    (void)rank;
    next_round = then(running, aggregate);
    return running;
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    static_assert(sizeof(C) == sizeof(double), "the exchange sends two 8-byte carries");
    const int slot = round & 1;
    const unsigned parity = static_cast<unsigned>(round >> 1) & 1u;
    const unsigned barrier = gae_shared_address(&barriers[slot]);
    const auto lane = static_cast<int>(threadIdx.x % 32);
    if (lane == 0) {
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(barrier),
                   "r"((Cluster - 1) * gae_sent_bytes)
                   : "memory");
    }
    if (lane < Cluster && lane != rank) {
      unsigned remote_slot = 0;
      unsigned remote_count = 0;
      unsigned remote_barrier = 0;
      const auto target = static_cast<unsigned>(lane);
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                   : "=r"(remote_slot)
                   : "r"(gae_shared_address(&received[slot][rank].value)), "r"(target));
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                   : "=r"(remote_count)
                   : "r"(gae_shared_address(&received[slot][rank].count)), "r"(target));
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                   : "=r"(remote_barrier)
                   : "r"(barrier), "r"(target));
      const double value = aggregate.value;
      const double advantage = aggregate.advantage;
      asm volatile(
          "st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f64 [%0], {%1, %2}, [%3];" ::
              "r"(remote_slot),
          "d"(value), "d"(advantage), "r"(remote_barrier)
          : "memory");
      asm volatile(
          "st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(
              remote_count),
          "r"(aggregate.count), "r"(remote_barrier)
          : "memory");
    }
    unsigned arrived = 0;
    while (arrived == 0) {
      asm volatile("{\n\t.reg .pred done;\n\t"
                   "mbarrier.try_wait.parity.shared::cta.b64 done, [%1], %2;\n\t"
                   "selp.u32 %0, 1, 0, done;\n\t}"
                   : "=r"(arrived)
                   : "r"(barrier), "r"(parity)
                   : "memory");
    }
    map mine = aggregate;
    if (lane < Cluster && lane != rank) {
      const gae_received_map<C>& got = received[slot][lane];
      mine = map{got.count, got.value, got.advantage};
    }
    map prefix = running;
    map all = running;
#pragma unroll
    for (int q = 0; q < Cluster; ++q) {
      map agg;
      agg.count = __shfl_sync(0xFFFFFFFFu, mine.count, q);
      agg.value = __shfl_sync(0xFFFFFFFFu, mine.value, q);
      agg.advantage = __shfl_sync(0xFFFFFFFFu, mine.advantage, q);
      all = then(all, agg);
      if (q + 1 == rank) {
        prefix = all;
      }
    }
    next_round = all;
    return prefix;
#else
    (void)running;
    (void)aggregate;
    (void)then;
    (void)received;
    (void)barriers;
    (void)round;
    (void)rank;
    (void)next_round;
    __trap(); // the launch checks that the kernel has sm_90 code before asking for clusters
    return {};
#endif
  }
}

/// Resident blocks of 256 threads per SM asked of the compiler: with 8 tokens per thread, 4 (a
/// cap of 64 registers, so 4 CTAs of a row's cluster share an SM); with 16, 2 (128 registers).
template <int Items>
inline constexpr int gae_min_blocks = Items <= 8 ? 4 : 2;

/// GAE advantages and returns, Cluster CTAs per row (header comment). Vectorized: padded layout,
/// fp32 row-major views with row strides and T multiples of 4 and 16-byte aligned data, 1-byte
/// mask (checked by the caller); otherwise every access goes through the views. The grid is a
/// multiple of Cluster, launched with cluster dimension Cluster when Cluster > 1.
template <int Threads, int Items, int Cluster, bool Vectorized, class C, class Layout,
          class Rewards, class Values, class Advantages, class Returns>
__global__ void __launch_bounds__(Threads, gae_min_blocks<Items>)
    gae_rows_kernel(Layout layout, Rewards rewards, Values values, Advantages advantages,
                    Returns returns, C gamma, C lambda) {
  static_assert(!Vectorized || Items % 4 == 0, "vectorized chunks are whole float4s");
  static_assert(Cluster >= 1 && Cluster <= gae_max_cluster && Cluster <= Threads);
  using map = math::gae_segment_map<C>;
  constexpr int warps = Threads / 32;
  static_assert(Threads % 32 == 0 && warps >= 1 && warps <= 32 && Cluster <= 32);
  using warp_scan = cub::WarpScan<map>;
  using warps_scan = cub::WarpScan<map, warps>;
  using R = typename Rewards::value_type;
  using V = typename Values::value_type;
  using A = typename Advantages::value_type;
  using Ret = typename Returns::value_type;
  constexpr index_t chunk_tokens = index_t{Threads} * Items;
  constexpr index_t round_tokens = chunk_tokens * Cluster;
  constexpr int high_count = static_cast<int>((chunk_tokens + 63) / 64);
  static_assert(Threads >= 64 + high_count, "one thread per power table entry");
  __shared__ typename warp_scan::TempStorage warp_storage[warps];
  __shared__ typename warps_scan::TempStorage warps_storage;
  __shared__ map warp_aggregates[warps];
  __shared__ map warp_prefixes[warps]; // chunk prefix o the later warps of the chunk
  __shared__ map next_running;
  __shared__ C low[64];          // (gamma lambda)^j
  __shared__ C high[high_count]; // (gamma lambda)^(64 h)
  // Aggregates received from the other CTAs of the cluster, by round parity, and their barriers.
  __shared__ gae_received_map<C> received[2][Cluster];
  __shared__ unsigned long long received_barriers[2];
  const C gamma_lambda = gamma * lambda;
  if (threadIdx.x < 64) {
    low[threadIdx.x] = math::gae_power(gamma_lambda, static_cast<int>(threadIdx.x));
  } else if (threadIdx.x < 64 + high_count) {
    high[threadIdx.x - 64] = math::gae_power(gamma_lambda, 64 * static_cast<int>(threadIdx.x - 64));
  }
  if constexpr (Cluster > 1) {
    gae_init_exchange(received_barriers); // also a block barrier for the tables
  } else {
    __syncthreads();
  }
  const gae_then_op<C> then{gamma, gamma_lambda, low, high};
  const auto rank = static_cast<int>(blockIdx.x % Cluster);
  const index_t piece = index_t{Threads} - 1 - static_cast<index_t>(threadIdx.x);
  const index_t rows = layout.rows();
  const index_t groups = gridDim.x / Cluster;
  int round = 0;
  for (index_t i = blockIdx.x / Cluster; i < rows; i += groups) {
    const index_t len = layout.row_length(i);
    gae_row_pointers row{};
    if constexpr (Vectorized) {
      row = {rewards.data + i * rewards.row_stride, values.data + i * values.row_stride,
             layout.mask.data != nullptr ? reinterpret_cast<const unsigned char*>(layout.mask.data)
                                               + i * layout.mask.row_stride
                                         : nullptr,
             advantages.data + i * advantages.row_stride, returns.data + i * returns.row_stride};
    }
    map running{}; // the later rounds of the row
    for (index_t end = len; end > 0; end -= round_tokens, ++round) {
      // token of item 0 of this thread's piece (may be < 0: outside the row)
      const index_t first = end - (rank + 1) * chunk_tokens + piece * Items;
      R r[Items];
      V v[Items];
      bool valid[Items];
      if constexpr (Vectorized) {
        load_gae_piece<Items>(row, first, r, v, valid);
      } else {
        load_gae_piece<Items>(layout, rewards, values, i, first, r, v, valid);
      }
      map piece_map{};
#pragma unroll
      for (int j = Items - 1; j >= 0; --j) {
        piece_map = math::gae_fold_token(piece_map, valid[j], gamma, gamma_lambda,
                                         static_cast<C>(r[j]), static_cast<C>(v[j]));
      }
      // Step 2: scan within the warp, then of the warp aggregates (warp 0), so that each thread
      // composes one map: (chunk prefix o later warps) o (later lanes of its warp).
      const int warp = static_cast<int>(threadIdx.x / 32);
      const int lane = static_cast<int>(threadIdx.x % 32);
      map inclusive{};
      map later{};
      warp_scan(warp_storage[warp]).Scan(piece_map, inclusive, later, then);
      if (lane == 31) {
        warp_aggregates[warp] = inclusive;
      }
      __syncthreads();
      if (warp == 0) {
        const map warp_map = lane < warps ? warp_aggregates[lane] : map{};
        map warp_inclusive{};
        map warp_exclusive{};
        if (lane < warps) {
          warps_scan(warps_storage).Scan(warp_map, warp_inclusive, warp_exclusive, then);
        }
        map aggregate;
        aggregate.count = __shfl_sync(0xFFFFFFFFu, warp_inclusive.count, warps - 1);
        aggregate.value = __shfl_sync(0xFFFFFFFFu, warp_inclusive.value, warps - 1);
        aggregate.advantage = __shfl_sync(0xFFFFFFFFu, warp_inclusive.advantage, warps - 1);
        // Step 3.
        map round_map{};
        const map prefix = gae_exchange_aggregates<Cluster>(
            running, aggregate, then, received, received_barriers, round, rank, round_map);
        if (lane < warps) {
          warp_prefixes[lane] = lane == 0 ? prefix : then(prefix, warp_exclusive);
        }
        if (lane == 0) {
          next_running = round_map;
        }
      }
      __syncthreads();
      running = next_running;
      later = lane == 0 ? warp_prefixes[warp] : then(warp_prefixes[warp], later);
      C next_value = later.value;
      C next_advantage = later.advantage;
      A a_out[Items];
      Ret ret_out[Items];
#pragma unroll
      for (int j = Items - 1; j >= 0; --j) {
        const C value = static_cast<C>(v[j]);
        const C advantage = math::gae_advantage(gamma, gamma_lambda, static_cast<C>(r[j]), value,
                                                next_value, next_advantage);
        a_out[j] = valid[j] ? static_cast<A>(advantage) : A(0);
        ret_out[j] = valid[j] ? static_cast<Ret>(advantage + value) : Ret(0);
        next_value = valid[j] ? value : next_value;
        next_advantage = valid[j] ? advantage : next_advantage;
      }
      if constexpr (Vectorized) {
#pragma unroll
        for (int q = 0; q < Items / 4; ++q) {
          if (first + 4 * q >= 0) {
            store4(row.advantages + first + 4 * q, &a_out[4 * q]);
            store4(row.returns + first + 4 * q, &ret_out[4 * q]);
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
    }
  }
  if constexpr (Cluster > 1) {
    gae_cluster_barrier_relaxed(); // no CTA exits while another may still send to it
  }
}

} // namespace rlcore::cuda::detail

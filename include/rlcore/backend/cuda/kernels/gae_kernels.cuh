// The fused GAE kernel behind rlcore::cuda::gae_advantages (advantage.cuh): one reverse scan per
// row over the affine maps of GAE's one-number carry (math/advantage.hpp: c_t = V_t + lambda A_t,
// A_t = (r_t - V_t) + gamma c_next; a segment maps c -> multiplier * c + offset, gae_carry_map),
// no scratch.
//
// A row is covered by a group of Cluster CTAs (one thread-block cluster on sm_90; Cluster = 1:
// one block per row, no cluster), grid-stride over rows. The group walks the row from its end in
// rounds of Cluster chunks of Threads * Items tokens: CTA rank q takes the q-th chunk from the end
// of the round, so all Cluster chunks are loaded at once. In a chunk, warp w owns the span
// warps - 1 - w of 32 * Items consecutive tokens, made of Items / 4 groups of 128 tokens; lane l
// owns the 4 consecutive tokens at 4 (31 - l) of each group. So one 16-byte access of a warp
// covers 512 contiguous bytes of r, V, A or returns (128 of the mask), and the scan order, lanes
// 0..31 of the warp's last group, then of the group before, ..., warps 0..warps-1, is the reverse
// order over tokens:
//   1. load r, V and the mask of the thread's groups into registers (16-byte loads when the
//      views allow it; from the second round of a CTA on, from shared memory, where cp.async
//      copied them during the previous round) and fold each group's 4 tokens from the last to
//      the first (gae_carry_fold_token: one map per group),
//   2. exclusive scan of the group maps in scan order (gae_carry_then: one multiply and one
//      fused multiply-add, no branches, no tables): with 8 tokens per thread, the 64 group maps of
//      a warp are moved by shuffles so that lane l holds scan positions 2l and 2l + 1, composed
//      into one map, scanned over the lanes (gae_carry_warp_scan) and the two exclusive maps
//      moved back to their owners; with 16, one lane scan per group; then warp 0 scans the warp
//      aggregates -> the chunk's aggregate map and, per warp, the map of the later warps,
//   3. warp 0 of every CTA sends its chunk aggregate to the other CTAs of the cluster
//      (st.async into their shared memory, completing bytes on their mbarrier: no GPU-wide fence),
//      waits for theirs and composes, in the same fixed order, the map of the later
//      rounds with the aggregates of the later chunks (the chunk's prefix) and with all of them
//      (the map of the next round); it composes each warp's map with the prefix (block barrier),
//   4. every thread composes its warp's map with the exclusive map of each of its groups, whose
//      offset is the carry at the group's end (the carry past the row's end is 0), and walks the
//      group backwards from it (gae_advantage_from_carry, gae_carry), writing A and A + V (0 at
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

/// Loads the Items / 4 groups of 4 consecutive tokens of a thread in the coalesced ownership
/// (group g starts at token `first` + 128 g; tokens < 0 are outside the row: invalid, 0), through
/// the views (per-element path).
template <int Items, class Layout, class Rewards, class Values>
__device__ void load_gae_groups(const Layout& layout, const Rewards& rewards, const Values& values,
                                index_t i, index_t first, typename Rewards::value_type* r,
                                typename Values::value_type* v, bool* valid) {
  using R = typename Rewards::value_type;
  using V = typename Values::value_type;
#pragma unroll
  for (int g = 0; g < Items / 4; ++g) {
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      const index_t t = first + 128 * g + b;
      valid[4 * g + b] = t >= 0 && layout.valid(i, t);
      r[4 * g + b] = t >= 0 ? rewards(i, t) : R(0);
      v[4 * g + b] = t >= 0 ? values(i, t) : V(0);
    }
  }
}

/// The same from row pointers, one float4 of r and V and one mask word per group (groups 128
/// tokens apart: a warp's load instruction covers 512 contiguous bytes of r or V and 128 of the
/// mask; first is a multiple of 4; streaming: read once).
template <int Items>
__device__ void load_gae_groups(const gae_row_pointers& row, index_t first, float* r, float* v,
                                bool* valid) {
#pragma unroll
  for (int g = 0; g < Items / 4; ++g) {
    const index_t t = first + 128 * g;
    if (t >= 0) {
      load4(row.rewards + t, &r[4 * g]);
      load4(row.values + t, &v[4 * g]);
      const unsigned word =
          row.mask != nullptr ? __ldcs(reinterpret_cast<const unsigned*>(row.mask + t)) : ~0u;
      mask4(word, &valid[4 * g]);
    } else {
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        r[4 * g + b] = 0;
        v[4 * g + b] = 0;
        valid[4 * g + b] = false;
      }
    }
  }
}

/// Row i's pointers for the 16-byte path (gae_row_pointers).
template <class Layout, class Rewards, class Values, class Advantages, class Returns>
__device__ gae_row_pointers gae_pointers_of_row(const Layout& layout, const Rewards& rewards,
                                                const Values& values, const Advantages& advantages,
                                                const Returns& returns, index_t i) {
  return {rewards.data + i * rewards.row_stride, values.data + i * values.row_stride,
          layout.mask.data != nullptr ? reinterpret_cast<const unsigned char*>(layout.mask.data)
                                            + i * layout.mask.row_stride
                                      : nullptr,
          advantages.data + i * advantages.row_stride, returns.data + i * returns.row_stride};
}

/// cp.async of `bytes` (4 or 16) from global to shared memory (L2 only for 16); before sm_80, a
/// plain copy (the same data when the thread reads the slot after gae_cp_async_wait_all).
__device__ inline void gae_cp_async(void* shared, const void* global, int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  if (bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(address), "l"(global)
                 : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(address), "l"(global) : "memory");
  }
#else
  if (bytes == 16) {
    *static_cast<float4*>(shared) = *static_cast<const float4*>(global);
  } else {
    *static_cast<unsigned*>(shared) = *static_cast<const unsigned*>(global);
  }
#endif
}

/// Commits the cp.async copies issued so far as one group (sm_80+).
__device__ inline void gae_cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

/// Waits until every cp.async group of the thread has completed (sm_80+).
__device__ inline void gae_cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 0;" ::: "memory");
#endif
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

/// Composition operator of the one-number-carry scan (math::gae_carry_then): `later` covers lower
/// thread ranks (later tokens). No branches, no power tables.
template <class C>
struct gae_carry_then_op {
  __device__ math::gae_carry_map<C> operator()(const math::gae_carry_map<C>& later,
                                               const math::gae_carry_map<C>& earlier) const {
    return math::gae_carry_then(later, earlier);
  }
};

/// A carry map shifted up by `delta` lanes (__shfl_up_sync of both fields).
template <class C>
__device__ math::gae_carry_map<C> gae_shfl_up(const math::gae_carry_map<C>& x, int delta) {
  return {__shfl_up_sync(0xFFFFFFFFu, x.multiplier, delta),
          __shfl_up_sync(0xFFFFFFFFu, x.offset, delta)};
}

/// The carry map of lane `source` (__shfl_sync of both fields).
template <class C>
__device__ math::gae_carry_map<C> gae_shfl(const math::gae_carry_map<C>& x, int source) {
  return {__shfl_sync(0xFFFFFFFFu, x.multiplier, source),
          __shfl_sync(0xFFFFFFFFu, x.offset, source)};
}

/// `yes` when `condition`, else `no`, field by field (selects, no local memory).
template <class C>
__device__ math::gae_carry_map<C> gae_pick(bool condition, const math::gae_carry_map<C>& yes,
                                           const math::gae_carry_map<C>& no) {
  return {condition ? yes.multiplier : no.multiplier, condition ? yes.offset : no.offset};
}

/// Inclusive and exclusive scans of one carry map per lane over the 32 lanes of a warp, lane 0
/// first: inclusive = x_0 o ... o x_lane, exclusive the same up to lane - 1 (the identity in lane
/// 0), o = math::gae_carry_then. A fixed tree (Kogge-Stone, 5 steps): the same bits on every
/// launch.
template <class C>
__device__ void gae_carry_warp_scan(const math::gae_carry_map<C>& x,
                                    math::gae_carry_map<C>& inclusive,
                                    math::gae_carry_map<C>& exclusive, int lane) {
  inclusive = x;
#pragma unroll
  for (int delta = 1; delta < 32; delta *= 2) {
    const math::gae_carry_map<C> up = gae_shfl_up(inclusive, delta);
    if (lane >= delta) {
      inclusive = math::gae_carry_then(up, inclusive);
    }
  }
  exclusive = gae_shfl_up(inclusive, 1);
  if (lane == 0) {
    exclusive = {};
  }
}

/// A chunk aggregate carry map as received from another CTA of the cluster (one 16-byte
/// st.async).
template <class C>
struct alignas(16) gae_received_map {
  C multiplier;
  C offset;
};

/// Bytes one CTA sends to another per round (gae_exchange_aggregates).
inline constexpr unsigned gae_sent_bytes = 2 * sizeof(double);

/// Step 3 of the header comment, run by warp 0 of every CTA of a group of Cluster (rank `rank`),
/// round `round` of the kernel: lanes q != rank send the chunk's aggregate carry map to CTA q
/// (st.async into its `received[round % 2][rank]`, completing bytes on its barrier
/// `barriers[round % 2]`), then the warp waits until the Cluster - 1 maps sent to this CTA have
/// arrived (no GPU-wide fence, no cluster barrier: the CTAs of a cluster stay at most one round
/// apart, so two slots and barriers suffice). Returns in every lane the same compositions, in
/// chunk order: prefix = running o agg_0 o ... o agg_(rank-1) and, in `next_round`, prefix o
/// agg_rank o ... o agg_(Cluster-1) (o = math::gae_carry_then).
template <int Cluster, class C>
__device__ math::gae_carry_map<C>
gae_exchange_aggregates(const math::gae_carry_map<C>& running,
                        const math::gae_carry_map<C>& aggregate,
                        gae_received_map<C> (*received)[Cluster], unsigned long long* barriers,
                        int round, int rank, math::gae_carry_map<C>& next_round) {
  using map = math::gae_carry_map<C>;
  if constexpr (Cluster == 1) {
    (void)received;
    (void)barriers;
    (void)round;
    (void)rank;
    next_round = math::gae_carry_then(running, aggregate);
    return running;
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    static_assert(sizeof(C) == sizeof(double), "the exchange sends two 8-byte numbers");
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
      unsigned remote_barrier = 0;
      const auto target = static_cast<unsigned>(lane);
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                   : "=r"(remote_slot)
                   : "r"(gae_shared_address(&received[slot][rank])), "r"(target));
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                   : "=r"(remote_barrier)
                   : "r"(barrier), "r"(target));
      const double multiplier = aggregate.multiplier;
      const double offset = aggregate.offset;
      asm volatile(
          "st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f64 [%0], {%1, %2}, [%3];" ::
              "r"(remote_slot),
          "d"(multiplier), "d"(offset), "r"(remote_barrier)
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
      mine = map{got.multiplier, got.offset};
    }
    map prefix = running;
    map all = running;
#pragma unroll
    for (int q = 0; q < Cluster; ++q) {
      all = math::gae_carry_then(all, gae_shfl(mine, q));
      if (q + 1 == rank) {
        prefix = all;
      }
    }
    next_round = all;
    return prefix;
#else
    (void)running;
    (void)aggregate;
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
/// fp32 row-major views with row strides and T multiples of 4 and 16-byte aligned data, 1-byte mask
/// (checked by the caller); otherwise every access goes through the views. The grid is a multiple
/// of Cluster, launched with cluster dimension Cluster when Cluster > 1.
template <int Threads, int Items, int Cluster, bool Vectorized, class C, class Layout,
          class Rewards, class Values, class Advantages, class Returns>
__global__ void __launch_bounds__(Threads, gae_min_blocks<Items>)
    gae_rows_kernel(Layout layout, Rewards rewards, Values values, Advantages advantages,
                    Returns returns, C gamma, C lambda) {
  static_assert(Items % 4 == 0, "a thread's tokens are groups of 4");
  constexpr int walks = Items / 4;                    // groups (carries, walks) per thread
  constexpr bool paired = Items == 8;                 // one scan over pairs of group maps
  constexpr bool prefetch = Vectorized && Items == 8; // next round's chunk by cp.async
  static_assert(Cluster >= 1 && Cluster <= gae_max_cluster && Cluster <= Threads);
  using map = math::gae_carry_map<C>;
  constexpr int warps = Threads / 32;
  static_assert(Threads % 32 == 0 && warps >= 1 && warps <= 32 && Cluster <= 32);
  using warps_scan = cub::WarpScan<map, warps>;
  using R = typename Rewards::value_type;
  using V = typename Values::value_type;
  using A = typename Advantages::value_type;
  using Ret = typename Returns::value_type;
  constexpr index_t chunk_tokens = index_t{Threads} * Items;
  constexpr index_t round_tokens = chunk_tokens * Cluster;
  __shared__ typename warps_scan::TempStorage warps_storage;
  __shared__ map warp_aggregates[warps];
  __shared__ map warp_prefixes[warps]; // chunk prefix o the later warps of the chunk
  __shared__ map next_running;
  // Aggregates received from the other CTAs of the cluster, by round parity, and their barriers.
  __shared__ gae_received_map<C> received[2][Cluster];
  __shared__ unsigned long long received_barriers[2];
  const C gamma_lambda = gamma * lambda;
  if constexpr (Cluster > 1) {
    gae_init_exchange(received_barriers);
  }
  const gae_carry_then_op<C> then{};
  const auto rank = static_cast<int>(blockIdx.x % Cluster);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const index_t rows = layout.rows();
  const index_t groups = gridDim.x / Cluster;
  // The next round's r, V (float4 slots) and mask words of each thread, by round parity.
  constexpr int prefetch_slots = prefetch ? Threads * walks : 1;
  __shared__ float4 next_rewards[2][prefetch_slots];
  __shared__ float4 next_values[2][prefetch_slots];
  __shared__ unsigned next_mask[2][prefetch_slots];
  bool prefetched = false;
  // This thread's group 0 from the chunk start: warp w owns span warps - 1 - w of 32 * Items
  // tokens, lane l the float4 at 4 (31 - l) of each of its groups (128 tokens apart).
  const index_t warp_offset = index_t{warps - 1 - warp} * (32 * Items) + 4 * (31 - lane);
  int round = 0;
  for (index_t i = blockIdx.x / Cluster; i < rows; i += groups) {
    const index_t len = layout.row_length(i);
    gae_row_pointers row{};
    if constexpr (Vectorized) {
      row = gae_pointers_of_row(layout, rewards, values, advantages, returns, i);
    }
    // The next row of this group, whose first round the row's last round prefetches.
    const index_t next_i = i + groups;
    const index_t next_len = next_i < rows ? layout.row_length(next_i) : 0;
    gae_row_pointers next_row{};
    if constexpr (prefetch) {
      if (next_len > 0) {
        next_row = gae_pointers_of_row(layout, rewards, values, advantages, returns, next_i);
      }
    }
    map running{}; // the later rounds of the row
    for (index_t end = len; end > 0; end -= round_tokens, ++round) {
      const index_t chunk_start = end - (rank + 1) * chunk_tokens; // may be < 0
      // Item 4 g + b of this thread is token first + 128 g + b (< 0: outside the row).
      const index_t first = chunk_start + warp_offset;
      R r[Items];
      V v[Items];
      bool valid[Items];
      if constexpr (prefetch) {
        if (prefetched) {
          gae_cp_async_wait_all();
          const int slot = round & 1;
#pragma unroll
          for (int g = 0; g < Items / 4; ++g) {
            const int k = g * Threads + static_cast<int>(threadIdx.x);
            const bool inside = first + 128 * g >= 0;
            const float4 x = inside ? next_rewards[slot][k] : float4{0, 0, 0, 0};
            const float4 y = inside ? next_values[slot][k] : float4{0, 0, 0, 0};
            const unsigned word = !inside ? 0u : row.mask != nullptr ? next_mask[slot][k] : ~0u;
            r[4 * g] = x.x;
            r[4 * g + 1] = x.y;
            r[4 * g + 2] = x.z;
            r[4 * g + 3] = x.w;
            v[4 * g] = y.x;
            v[4 * g + 1] = y.y;
            v[4 * g + 2] = y.z;
            v[4 * g + 3] = y.w;
            mask4(word, &valid[4 * g]);
          }
        } else {
          load_gae_groups<Items>(row, first, r, v, valid);
        }
        // The next round of this CTA: the next chunk group of the row, else the next row's first.
        const bool last_round = end <= round_tokens;
        const float* source_rewards = last_round ? next_row.rewards : row.rewards;
        const float* source_values = last_round ? next_row.values : row.values;
        const unsigned char* source_mask = last_round ? next_row.mask : row.mask;
        const index_t next_first =
            last_round ? next_len - (rank + 1) * chunk_tokens + warp_offset : first - round_tokens;
        prefetched = !last_round || next_len > 0;
        if (prefetched) {
          const int slot = (round + 1) & 1;
#pragma unroll
          for (int g = 0; g < Items / 4; ++g) {
            const index_t t = next_first + 128 * g;
            const int k = g * Threads + static_cast<int>(threadIdx.x);
            if (t >= 0) {
              gae_cp_async(&next_rewards[slot][k], source_rewards + t, 16);
              gae_cp_async(&next_values[slot][k], source_values + t, 16);
              if (source_mask != nullptr) {
                gae_cp_async(&next_mask[slot][k], source_mask + t, 4);
              }
            }
          }
          gae_cp_async_commit();
        }
      } else if constexpr (Vectorized) {
        load_gae_groups<Items>(row, first, r, v, valid);
      } else {
        load_gae_groups<Items>(layout, rewards, values, i, first, r, v, valid);
      }
      // Step 2: scan within the warp, then of the warp aggregates (warp 0), so that each thread
      // composes one map per group: (chunk prefix o later warps) o (later tokens of its warp).
      map later[walks]{}; // per group: the warp's tokens after the group's 4 (exclusive)
      {
        map group_maps[walks]{};
#pragma unroll
        for (int g = 0; g < walks; ++g) {
#pragma unroll
          for (int b = 3; b >= 0; --b) {
            const int j = 4 * g + b;
            group_maps[g] =
                math::gae_carry_fold_token(group_maps[g], valid[j], gamma, lambda, gamma_lambda,
                                           static_cast<C>(r[j]), static_cast<C>(v[j]));
          }
        }
        if constexpr (paired) {
          // Scan order: group 1 lanes 0..31 (positions 0..31), then group 0 (32..63). Lane l
          // gathers positions 2l, 2l + 1 (two shuffle rounds, sources select the group), scans
          // their pairs, and the exclusive maps go back to their owners (two more rounds).
          const bool odd = (lane & 1) != 0;
          const bool upper = lane >= 16;
          const map got_a = gae_shfl(gae_pick(odd, group_maps[0], group_maps[1]),
                                     (2 * lane + (upper ? 1 : 0)) & 31);
          const map got_b = gae_shfl(gae_pick(odd, group_maps[1], group_maps[0]),
                                     (2 * lane + (upper ? 0 : 1)) & 31);
          const map first_map = gae_pick(upper, got_b, got_a);  // position 2 l
          const map second_map = gae_pick(upper, got_a, got_b); // position 2 l + 1
          map pair_inclusive{};
          map pair_exclusive{};
          gae_carry_warp_scan(then(first_map, second_map), pair_inclusive, pair_exclusive, lane);
          const map exclusive_first = pair_exclusive;
          const map exclusive_second = then(pair_exclusive, first_map);
          const map got_c = gae_shfl(gae_pick(upper, exclusive_second, exclusive_first),
                                     odd ? 16 + lane / 2 : lane / 2);
          const map got_d = gae_shfl(gae_pick(upper, exclusive_first, exclusive_second),
                                     odd ? lane / 2 : 16 + lane / 2);
          later[1] = gae_pick(odd, got_d, got_c);
          later[0] = gae_pick(odd, got_c, got_d);
          if (lane == 31) {
            warp_aggregates[warp] = pair_inclusive;
          }
        } else {
          map inclusive[walks]{};
#pragma unroll
          for (int g = 0; g < walks; ++g) {
            gae_carry_warp_scan(group_maps[g], inclusive[g], later[g], lane);
          }
          if (lane == 31) {
            map warp_map = inclusive[walks - 1];
#pragma unroll
            for (int g = walks - 2; g >= 0; --g) {
              warp_map = then(warp_map, inclusive[g]);
            }
            warp_aggregates[warp] = warp_map;
          }
          // later[g] := (the later groups of the warp) o (the later lanes of group g).
          map after{};
#pragma unroll
          for (int g = walks - 1; g > 0; --g) {
            after = then(after, gae_shfl(inclusive[g], 31));
            later[g - 1] = then(after, later[g - 1]);
          }
        }
      }
      __syncthreads();
      if (warp == 0) {
        const map warp_map = lane < warps ? warp_aggregates[lane] : map{};
        map warp_inclusive{};
        map warp_exclusive{};
        if (lane < warps) {
          warps_scan(warps_storage).Scan(warp_map, warp_inclusive, warp_exclusive, then);
        }
        const map aggregate = gae_shfl(warp_inclusive, warps - 1);
        // Step 3.
        map round_map{};
        const map prefix = gae_exchange_aggregates<Cluster>(
            running, aggregate, received, received_barriers, round, rank, round_map);
        if (lane < warps) {
          warp_prefixes[lane] = lane == 0 ? prefix : then(prefix, warp_exclusive);
        }
        if (lane == 0) {
          next_running = round_map;
        }
      }
      __syncthreads();
      running = next_running;
      // Step 4: the carry at the end of each group (its map applied to the carry 0 at the row's
      // end), then the walk.
      const map warp_prefix = warp_prefixes[warp];
      A a_out[Items];
      Ret ret_out[Items];
#pragma unroll
      for (int g = 0; g < walks; ++g) {
        C carry = then(warp_prefix, later[g]).offset;
#pragma unroll
        for (int j = 4 * g + 3; j >= 4 * g; --j) {
          const C value = static_cast<C>(v[j]);
          const C advantage =
              math::gae_advantage_from_carry(gamma, static_cast<C>(r[j]), value, carry);
          a_out[j] = valid[j] ? static_cast<A>(advantage) : A(0);
          ret_out[j] = valid[j] ? static_cast<Ret>(advantage + value) : Ret(0);
          carry = valid[j] ? math::gae_carry(lambda, value, advantage) : carry;
        }
      }
      if constexpr (Vectorized) {
#pragma unroll
        for (int g = 0; g < walks; ++g) {
          const index_t t = first + 128 * g;
          if (t >= 0) {
            store4(row.advantages + t, &a_out[4 * g]);
            store4(row.returns + t, &ret_out[4 * g]);
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < Items; ++j) {
          const index_t t = first + 128 * (j / 4) + j % 4;
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

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
//      views allow it, gae_access: aligned rows directly; rows at any start as the aligned
//      float4s / mask words around the groups, shifted into place by shuffles with the
//      neighbour lane; from the second round of a CTA on, from shared memory, where cp.async
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
//      masked slots; shifted rows: aligned float4s composed with the previous lane's outputs).
// The composition order is the chunk order of the row, the same for every Cluster, grid and
// stream: the result is a function of the data and Threads * Items alone, bitwise reproducible
// (Cluster > 1 gives the bits of Cluster = 1). Private: include advantage.cuh.
#pragma once

#include "../../../config.hpp"
#include "../../../math/advantage.hpp"
#include "grid_dependency.cuh"
#include "vector_rows.cuh"

#include <cstdint>
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

/// The 4 fp32 values at row positions [s, s + 4) of a row of `len` values from `p` (the row
/// start): one 16-byte load when the 4 lie in the row (p + s is then 16-byte aligned: the
/// caller's s), else one load per position inside the row, 0 outside it (never a byte past the
/// row).
__device__ inline void load4_in_row(const float* p, index_t s, index_t len, float* out) {
  if (s >= 0 && s + 4 <= len) {
    load4(p + s, out);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      out[k] = s + k >= 0 && s + k < len ? p[s + k] : 0.0f;
    }
  }
}

/// The 4 mask bytes at row positions [s, s + 4) as one word (byte k = position s + k): one 4-byte
/// load when they lie in the row (m + s 4-byte aligned), else byte by byte, 0 outside the row.
__device__ inline unsigned mask_word_in_row(const unsigned char* m, index_t s, index_t len) {
  if (s >= 0 && s + 4 <= len) {
    return __ldcs(reinterpret_cast<const unsigned*>(m + s));
  }
  unsigned word = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    word |= s + k >= 0 && s + k < len ? unsigned{m[s + k]} << (8 * k) : 0u;
  }
  return word;
}

/// Positions k + o, k = 0..3, of own[0..3] followed by next[0..2] (o = 0..3, uniform in the warp:
/// selects, no local memory).
__device__ inline void funnel4(int o, const float* own, const float* next, float* out) {
  const float c[7] = {own[0], own[1], own[2], own[3], next[0], next[1], next[2]};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    out[k] = o == 0 ? c[k] : o == 1 ? c[k + 1] : o == 2 ? c[k + 2] : c[k + 3];
  }
}

/// A thread's aligned accesses of one view on the shifted 16-byte path, for its Items / 4 groups
/// of 4 tokens [t, t + 4), t = first + 128 g (the coalesced ownership; t = len mod 4, modulo 4)
/// of a row of `len` elements, o = (the row start's element address + len) mod 4 (uniform per
/// row): own[g] holds row positions [t - o, t - o + 4) (one aligned float4 or mask word), tail
/// (lane 0, o != 0) the aligned one after its last group, [t + 4 - o, t + 8 - o) of g = last.
/// Positions outside the row are 0. All loads of a round are issued before any shuffle.
template <int Items>
struct gae_shifted_floats {
  float own[Items / 4][4];
  float tail[4];

  __device__ void load(const float* p, index_t len, int o, int lane, index_t first) {
#pragma unroll
    for (int g = 0; g < Items / 4; ++g) {
      load4_in_row(p, first + 128 * g - o, len, own[g]);
    }
    if (o != 0 && lane == 0) {
      load4_in_row(p, first + 128 * (Items / 4 - 1) + 4 - o, len, tail);
    }
  }

  /// The same from the copies that stage() made in shared memory during the previous round
  /// (slots[g * stride]: group g; tail_slot: lane 0's tail), the float4s not wholly in the row
  /// from global memory, element by element.
  __device__ void take(const float4* slots, int stride, const float4* tail_slot, const float* p,
                       index_t len, int o, int lane, index_t first) {
#pragma unroll
    for (int g = 0; g < Items / 4; ++g) {
      const index_t s = first + 128 * g - o;
      if (s >= 0 && s + 4 <= len) {
        const float4 x = slots[g * stride];
        own[g][0] = x.x;
        own[g][1] = x.y;
        own[g][2] = x.z;
        own[g][3] = x.w;
      } else {
        load4_in_row(p, s, len, own[g]);
      }
    }
    if (o != 0 && lane == 0) {
      const index_t s = first + 128 * (Items / 4 - 1) + 4 - o;
      if (s >= 0 && s + 4 <= len) {
        const float4 x = *tail_slot;
        tail[0] = x.x;
        tail[1] = x.y;
        tail[2] = x.z;
        tail[3] = x.w;
      } else {
        load4_in_row(p, s, len, tail);
      }
    }
  }

  /// Copies by cp.async the float4s that load() would read wholly in the row (a later round's
  /// first, len, o) into slots[g * stride] and tail_slot.
  static __device__ void stage(float4* slots, int stride, float4* tail_slot, const float* p,
                               index_t len, int o, int lane, index_t first) {
#pragma unroll
    for (int g = 0; g < Items / 4; ++g) {
      const index_t s = first + 128 * g - o;
      if (s >= 0 && s + 4 <= len) {
        gae_cp_async(&slots[g * stride], p + s, 16);
      }
    }
    const index_t s = first + 128 * (Items / 4 - 1) + 4 - o;
    if (o != 0 && lane == 0 && s >= 0 && s + 4 <= len) {
      gae_cp_async(tail_slot, p + s, 16);
    }
  }

  /// out[4 g + k] = row position t + k: positions [t, t + 4 - o) from own[g], [t + 4 - o, t + 4)
  /// from the aligned float4 of the lane with the next 4 tokens (lane - 1; for lane 0, lane 31's
  /// next group or its own tail) by shuffles, funnel4 by o.
  __device__ void shift(int o, int lane, float* out) const {
    constexpr int walks = Items / 4;
    if (o == 0) {
#pragma unroll
      for (int g = 0; g < walks; ++g) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          out[4 * g + k] = own[g][k];
        }
      }
      return;
    }
    const int source = (lane + 31) & 31;
#pragma unroll
    for (int g = 0; g < walks; ++g) {
      float next[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const float send = g + 1 < walks && lane == 31 ? own[g + 1][k] : own[g][k];
        next[k] = __shfl_sync(0xFFFFFFFFu, send, source);
        next[k] = g == walks - 1 && lane == 0 ? tail[k] : next[k];
      }
      funnel4(o, own[g], next, &out[4 * g]);
    }
  }
};

/// The same for a 1-byte mask row at m (nullptr: every position of the row valid): aligned 4-byte
/// words, the next lane's word by one shuffle, a funnel shift by 8 o bits; positions before the
/// row start invalid.
template <int Items>
struct gae_shifted_mask {
  unsigned own[Items / 4];
  unsigned tail;

  __device__ void load(const unsigned char* m, index_t len, int o, int lane, index_t first) {
    tail = 0;
#pragma unroll
    for (int g = 0; g < Items / 4; ++g) {
      own[g] = m != nullptr ? mask_word_in_row(m, first + 128 * g - o, len) : 0u;
    }
    if (m != nullptr && o != 0 && lane == 0) {
      tail = mask_word_in_row(m, first + 128 * (Items / 4 - 1) + 4 - o, len);
    }
  }

  /// The same from the copies of stage() (gae_shifted_floats::take).
  __device__ void take(const unsigned* slots, int stride, const unsigned* tail_slot,
                       const unsigned char* m, index_t len, int o, int lane, index_t first) {
    tail = 0;
#pragma unroll
    for (int g = 0; g < Items / 4; ++g) {
      const index_t s = first + 128 * g - o;
      own[g] = m == nullptr             ? 0u
               : s >= 0 && s + 4 <= len ? slots[g * stride]
                                        : mask_word_in_row(m, s, len);
    }
    if (m != nullptr && o != 0 && lane == 0) {
      const index_t s = first + 128 * (Items / 4 - 1) + 4 - o;
      tail = s >= 0 && s + 4 <= len ? *tail_slot : mask_word_in_row(m, s, len);
    }
  }

  /// Copies by cp.async the mask words that load() would read wholly in the row.
  static __device__ void stage(unsigned* slots, int stride, unsigned* tail_slot,
                               const unsigned char* m, index_t len, int o, int lane,
                               index_t first) {
    if (m == nullptr) {
      return;
    }
#pragma unroll
    for (int g = 0; g < Items / 4; ++g) {
      const index_t s = first + 128 * g - o;
      if (s >= 0 && s + 4 <= len) {
        gae_cp_async(&slots[g * stride], m + s, 4);
      }
    }
    const index_t s = first + 128 * (Items / 4 - 1) + 4 - o;
    if (o != 0 && lane == 0 && s >= 0 && s + 4 <= len) {
      gae_cp_async(tail_slot, m + s, 4);
    }
  }

  __device__ void shift(const unsigned char* m, int o, int lane, index_t first, bool* valid) const {
    constexpr int walks = Items / 4;
    if (m == nullptr) {
#pragma unroll
      for (int j = 0; j < Items; ++j) {
        valid[j] = first + 128 * (j / 4) + j % 4 >= 0;
      }
      return;
    }
    if (o == 0) {
#pragma unroll
      for (int g = 0; g < walks; ++g) {
        mask4(own[g], &valid[4 * g]);
      }
      return;
    }
    const int source = (lane + 31) & 31;
#pragma unroll
    for (int g = 0; g < walks; ++g) {
      const unsigned send = g + 1 < walks && lane == 31 ? own[g + 1] : own[g];
      unsigned next = __shfl_sync(0xFFFFFFFFu, send, source);
      next = g == walks - 1 && lane == 0 ? tail : next;
      mask4(__funnelshift_r(own[g], next, 8 * o), &valid[4 * g]);
    }
  }
};

/// Stores, for the shifted 16-byte path, a thread's outputs of the same groups (values[4 g + k]
/// of row position t + k) to a row of `len` values at `p`, o = (p's element address + len) mod 4:
/// lane l writes the aligned float4 at t - o, positions [t - o, t) from the lane with the
/// previous 4 tokens (lane + 1; for lane 31, lane 0's previous group) by shuffles, when that lane
/// is in the warp and the float4 lies in the row; every position of the lane not covered by such
/// a float4 (the row's first and last float4, a warp span's ends) is written alone. No write
/// outside [0, len).
template <int Items>
__device__ void store_shifted_groups(float* p, index_t len, int o, int lane, index_t first,
                                     const float* values) {
  constexpr int walks = Items / 4;
  const int source = (lane + 1) & 31;
#pragma unroll
  for (int g = 0; g < walks; ++g) {
    const index_t t = first + 128 * g;
    const index_t s = t - o;
    // This lane's float4 (at s) and the float4 holding its positions [t + 4 - o, t + 4).
    const bool own_vector = (o == 0 || lane < 31 || g > 0) && s >= 0 && s + 4 <= len;
    const bool next_vector = o != 0 && (lane > 0 || g + 1 < walks) && s + 4 >= 0 && s + 8 <= len;
    float vector[4];
    if (o == 0) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        vector[k] = values[4 * g + k];
      }
    } else {
      float previous[4]; // positions 1..3 of the previous 4 tokens
      previous[0] = 0.0f;
#pragma unroll
      for (int k = 1; k < 4; ++k) {
        const float send = g > 0 && lane == 0 ? values[4 * (g - 1) + k] : values[4 * g + k];
        previous[k] = __shfl_sync(0xFFFFFFFFu, send, source);
      }
      // vector[k] = position k - o + 4 of previous[0..3] followed by values[4 g .. 4 g + 3]
      const float c[7] = {previous[1],       previous[2],       previous[3],      values[4 * g],
                          values[4 * g + 1], values[4 * g + 2], values[4 * g + 3]};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        vector[k] = o == 1 ? c[k + 2] : o == 2 ? c[k + 1] : c[k];
      }
    }
    if (own_vector) {
      store4(p + s, vector);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const bool in_own = k < 4 - o;
      if (t + k >= 0 && t + k < len && !(in_own ? own_vector : next_vector)) {
        p[t + k] = values[4 * g + k];
      }
    }
  }
}

/// Row i's start in a per-token view with unit column stride: a padded matrix_view's row, or
/// the packed flat buffer at offsets[i].
template <class Layout, class View>
__device__ auto gae_row_start(const Layout& layout, const View& view, index_t i) {
  if constexpr (Layout::is_packed) {
    return view.flat.data + layout.row_begin(i);
  } else {
    return view.data + i * view.row_stride;
  }
}

/// Row i's pointers for the 16-byte paths (gae_row_pointers; the mask: 1-byte, unit column
/// stride, or none).
template <class Layout, class Rewards, class Values, class Advantages, class Returns>
__device__ gae_row_pointers gae_pointers_of_row(const Layout& layout, const Rewards& rewards,
                                                const Values& values, const Advantages& advantages,
                                                const Returns& returns, index_t i) {
  const unsigned char* mask = nullptr;
  if (layout.mask.data != nullptr) {
    if constexpr (Layout::is_packed) {
      mask = reinterpret_cast<const unsigned char*>(layout.mask.data) + layout.row_begin(i);
    } else {
      mask = reinterpret_cast<const unsigned char*>(layout.mask.data) + i * layout.mask.row_stride;
    }
  }
  return {gae_row_start(layout, rewards, i), gae_row_start(layout, values, i), mask,
          gae_row_start(layout, advantages, i), gae_row_start(layout, returns, i)};
}

/// (element address of p + len) mod 4 for an fp32 row of `len` values at p: the position in its
/// aligned float4 of every 4-token group of the row on the shifted path (t = len mod 4).
__device__ inline unsigned gae_shift(const void* p, index_t len, std::uintptr_t element_bytes) {
  return static_cast<unsigned>(
      (reinterpret_cast<std::uintptr_t>(p) / element_bytes + static_cast<std::uintptr_t>(len))
      & 3u);
}

/// The views' access on the GAE kernel's paths: through the views, one element at a time
/// (element); 16-byte loads and stores of aligned rows with T a multiple of 4, the next round
/// prefetched by cp.async (aligned); 16-byte loads and stores of fp32 rows with unit column
/// stride at any start, shifted into place by shuffles (shifted).
enum class gae_access { element, aligned, shifted };

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
/// The same per access path: the shifted path with 8 tokens per thread asks for 3 (80 registers:
/// no spills; with 4 it spills 28-56 bytes and was 0.4-1.1 us slower per call on the H200,
/// docs/benchmarks.md).
template <int Items, gae_access Access>
inline constexpr int gae_min_blocks_of = (Access == gae_access::shifted && Items == 8)
                                             ? 3
                                             : gae_min_blocks<Items>;

/// GAE advantages and returns, Cluster CTAs per row (header comment). Access (gae_access, checked
/// by the caller): aligned: padded layout, fp32 row-major views with row strides and T multiples
/// of 4 and 16-byte aligned data, 1-byte mask; shifted: fp32 views with unit column stride (padded
/// or packed), 1-byte mask with unit column stride or none; element: any views. The grid is a
/// multiple of Cluster, launched with cluster dimension Cluster when Cluster > 1.
template <int Threads, int Items, int Cluster, gae_access Access, class C, class Layout,
          class Rewards, class Values, class Advantages, class Returns>
__global__ void __launch_bounds__(Threads, gae_min_blocks_of<Items, Access>)
    gae_rows_kernel(Layout layout, Rewards rewards, Values values, Advantages advantages,
                    Returns returns, C gamma, C lambda) {
  static_assert(Items % 4 == 0, "a thread's tokens are groups of 4");
  constexpr int walks = Items / 4;                        // groups (carries, walks) per thread
  constexpr bool paired = Items == 8;                     // one scan over pairs of group maps
  constexpr bool by_rows = Access != gae_access::element; // through row pointers
  constexpr bool shifted = Access == gae_access::shifted;
  constexpr bool prefetch = Access == gae_access::aligned && Items == 8; // next round: cp.async
  constexpr bool shifted_prefetch = shifted && Items == 8; // the same on the shifted path
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
  // Launched as the programmatic dependent of the stream's previous grid (advantage.cuh): its
  // memory is complete past this point. No early allow_dependent_grids(): the next grid's CTAs
  // are scheduled as this grid's CTAs exit (waiting CTAs scheduled earlier slowed the 3-CTA
  // shifted path by ~17% on the H200, docs/benchmarks.md).
  wait_for_prior_grids();
  const gae_carry_then_op<C> then{};
  const auto rank = static_cast<int>(blockIdx.x % Cluster);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const index_t rows = layout.rows();
  const index_t groups = gridDim.x / Cluster;
  // The next round's r, V (float4 slots) and mask words of each thread, by round parity.
  constexpr int prefetch_slots = prefetch || shifted_prefetch ? Threads * walks : 1;
  __shared__ float4 next_rewards[2][prefetch_slots];
  __shared__ float4 next_values[2][prefetch_slots];
  __shared__ unsigned next_mask[2][prefetch_slots];
  // shifted: lane 0's tail float4 of r and V and mask word, per warp, by round parity
  constexpr int tail_slots = shifted_prefetch ? warps : 1;
  __shared__ float4 next_tails[2][2][tail_slots];
  __shared__ unsigned next_mask_tails[2][tail_slots];
  bool prefetched = false;
  // This thread's group 0 from the chunk start: warp w owns span warps - 1 - w of 32 * Items
  // tokens, lane l the float4 at 4 (31 - l) of each of its groups (128 tokens apart).
  const index_t warp_offset = index_t{warps - 1 - warp} * (32 * Items) + 4 * (31 - lane);
  int round = 0;
  for (index_t i = blockIdx.x / Cluster; i < rows; i += groups) {
    const index_t len = layout.row_length(i);
    gae_row_pointers row{};
    // shifted: each view's o (its row's groups' position in their aligned float4 / mask word), 2
    // bits each: rewards, values, mask, advantages, returns
    unsigned shifts = 0;
    if constexpr (by_rows) {
      row = gae_pointers_of_row(layout, rewards, values, advantages, returns, i);
    }
    if constexpr (shifted) {
      shifts = gae_shift(row.rewards, len, 4) | gae_shift(row.values, len, 4) << 2
               | gae_shift(row.mask, len, 1) << 4 | gae_shift(row.advantages, len, 4) << 6
               | gae_shift(row.returns, len, 4) << 8;
    }
    const auto shift_of = [shifts](int view) {
      return static_cast<int>(shifts >> (2 * view) & 3u);
    };
    // The next row of this group, whose first round the row's last round prefetches.
    const index_t next_i = i + groups;
    const index_t next_len = next_i < rows ? layout.row_length(next_i) : 0;
    gae_row_pointers next_row{};
    unsigned next_shifts = 0; // the next row's rewards, values, mask shifts (as `shifts`)
    if constexpr (prefetch || shifted_prefetch) {
      if (next_len > 0) {
        next_row = gae_pointers_of_row(layout, rewards, values, advantages, returns, next_i);
        if constexpr (shifted_prefetch) {
          next_shifts = gae_shift(next_row.rewards, next_len, 4)
                        | gae_shift(next_row.values, next_len, 4) << 2
                        | gae_shift(next_row.mask, next_len, 1) << 4;
        }
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
      } else if constexpr (shifted) {
        gae_shifted_floats<Items> rewards_in;
        gae_shifted_floats<Items> values_in;
        gae_shifted_mask<Items> mask_in;
        bool staged = false;
        if constexpr (shifted_prefetch) {
          staged = prefetched;
        }
        if (staged) {
          gae_cp_async_wait_all();
          const int slot = round & 1;
          const auto thread = static_cast<int>(threadIdx.x);
          rewards_in.take(&next_rewards[slot][thread], Threads, &next_tails[slot][0][warp],
                          row.rewards, len, shift_of(0), lane, first);
          values_in.take(&next_values[slot][thread], Threads, &next_tails[slot][1][warp],
                         row.values, len, shift_of(1), lane, first);
          mask_in.take(&next_mask[slot][thread], Threads, &next_mask_tails[slot][warp], row.mask,
                       len, shift_of(2), lane, first);
        } else {
          rewards_in.load(row.rewards, len, shift_of(0), lane, first);
          values_in.load(row.values, len, shift_of(1), lane, first);
          mask_in.load(row.mask, len, shift_of(2), lane, first);
        }
        if constexpr (shifted_prefetch) {
          // The next round of this CTA: the next chunk group of the row, else the next row's
          // first (the float4s and words wholly in that row; the others are read when used).
          const bool last_round = end <= round_tokens;
          const gae_row_pointers source = last_round ? next_row : row;
          const unsigned source_shifts = last_round ? next_shifts : shifts;
          const index_t source_len = last_round ? next_len : len;
          const index_t next_first = last_round ? next_len - (rank + 1) * chunk_tokens + warp_offset
                                                : first - round_tokens;
          prefetched = !last_round || next_len > 0;
          if (prefetched) {
            const int slot = (round + 1) & 1;
            const auto thread = static_cast<int>(threadIdx.x);
            gae_shifted_floats<Items>::stage(
                &next_rewards[slot][thread], Threads, &next_tails[slot][0][warp], source.rewards,
                source_len, static_cast<int>(source_shifts & 3u), lane, next_first);
            gae_shifted_floats<Items>::stage(
                &next_values[slot][thread], Threads, &next_tails[slot][1][warp], source.values,
                source_len, static_cast<int>(source_shifts >> 2 & 3u), lane, next_first);
            gae_shifted_mask<Items>::stage(
                &next_mask[slot][thread], Threads, &next_mask_tails[slot][warp], source.mask,
                source_len, static_cast<int>(source_shifts >> 4 & 3u), lane, next_first);
            gae_cp_async_commit();
          }
        }
        rewards_in.shift(shift_of(0), lane, r);
        values_in.shift(shift_of(1), lane, v);
        mask_in.shift(row.mask, shift_of(2), lane, first, valid);
      } else if constexpr (by_rows) {
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
      if constexpr (shifted) {
        store_shifted_groups<Items>(row.advantages, len, shift_of(3), lane, first, a_out);
        store_shifted_groups<Items>(row.returns, len, shift_of(4), lane, first, ret_out);
      } else if constexpr (by_rows) {
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

// The fused objective-from-logits kernel that reads each logits row from HBM exactly once (sm_90):
// a thread-block cluster of C CTAs per token slot, each CTA holding a contiguous slice of the
// row's 16-byte vectors in shared memory (C = 8 for bf16 V = 152,064: 37 KB per CTA).
//
//   1. each CTA bulk-copies its slice into shared memory (TMA, every 8 KB chunk issued at once by
//      one thread, completion per chunk on an mbarrier) and folds each chunk into base-2 softmax
//      statistics (math/softmax_fast.hpp) as it lands;
//   2. the C partial statistics are merged through distributed shared memory, in rank order in
//      every CTA (cluster.sync, map_shared_rank), so every CTA holds the same row statistics;
//   3. every CTA evaluates lp and the generic token pass (the same values; rank 0 writes the
//      metric sums and lp), then writes d loss / d logits for its slice from shared memory.
// HBM traffic: one read and one write of the logits, plus O(M) for per-token data.
//
// Rows whose fast statistics are not usable (NaN / inf logits, or finite logits beyond the fast
// path's range; math/softmax_fast.hpp) are recomputed exactly: every CTA of the cluster re-reads
// the row for math/softmax.hpp's statistics (a cluster barrier keeps the in-place writes behind
// all reads) and writes the gradient with the exact formulas. Needs rows 16-byte aligned (row
// start and stride); the vocabulary tail past the last whole vector is handled by the last rank
// from global memory. Private: include logits.cuh.
#pragma once

#include "logits_bulk_copy.cuh"
#include "logits_kernels.cuh"

#include <cooperative_groups.h>
#include <cstdint>

namespace rlcore::cuda::detail {

inline constexpr int cluster_logits_threads = 256;
inline constexpr index_t cluster_chunk_vectors = 512; ///< 8 KB per bulk copy and barrier
inline constexpr index_t cluster_max_chunks = 32;     ///< slices up to 256 KB
inline constexpr int max_cluster_ranks = 8;
static_assert(cluster_chunk_vectors % cluster_logits_threads == 0);

/// Writes the gradient of one 16-byte vector of logits `raw` (logits first .. first + W - 1) to
/// `out`: fast path (p from the base-2 offset) unless Exact.
template <bool Exact, class T>
__device__ inline uint4 vector_gradient(const uint4& raw, index_t first, index_t id, float k,
                                        float prob_offset, float row_max, float log_sum,
                                        float inv_temperature, float grad_log_prob) {
  constexpr int width = vector_width<T>;
  float values[width];
  unpack<T>(raw, values);
  uint4 packed;
  T* elements = reinterpret_cast<T*>(&packed);
  const bool holds_target = id >= first && id < first + width;
#pragma unroll
  for (int e = 0; e < width; ++e) {
    float g;
    if constexpr (Exact) {
      const float log_p = math::log_softmax_from(values[e], row_max, log_sum, inv_temperature);
      g = math::token_log_prob_logit_grad(log_p, first + e == id, grad_log_prob, 0.0f, 0.0f,
                                          inv_temperature);
    } else {
      const float p = math::softmax_fast_prob(values[e], k, prob_offset);
      g = math::log_prob_logit_grad(p, holds_target && first + e == id, grad_log_prob,
                                    inv_temperature);
    }
    elements[e] = float_to_logit<T>(g);
  }
  return packed;
}

/// One token slot per cluster of gridDim-consecutive CTAs (cluster dimension C along x):
/// slice_vectors 16-byte vectors of the row per CTA in dynamic shared memory. Flags and outputs as
/// fused_logits_objective_kernel.
template <bool UnitTemperature, class T, class Id, class Layout, class MakeTokenPass, class Sums>
__global__ void __launch_bounds__(cluster_logits_threads)
    fused_logits_cluster_kernel(Layout layout, const T* logits, index_t vocab, index_t row_stride,
                                T* grad_logits, index_t grad_row_stride, Id ids,
                                MakeTokenPass make_pass, float inv_temperature_arg,
                                float* log_probs_out, Sums* sums, unsigned long long* flags,
                                index_t slice_vectors) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr int threads = cluster_logits_threads;
  constexpr int width = vector_width<T>;
  extern __shared__ uint4 slice[];
  __shared__ cub::Uninitialized<row_statistics_storage<threads>> storage_memory;
  auto& storage = storage_memory.Alias();
  __shared__ math::softmax_fast_state<float> partial; // this CTA's; read by every rank
  __shared__ math::softmax_fast_state<float> partials[max_cluster_ranks];
  __shared__ math::softmax_fast_state<float> merged;
  __shared__ std::uint64_t chunk_ready[cluster_max_chunks];
  __shared__ float warm_lp;
  __shared__ float warm_grad;
  __shared__ math::softmax_partial<float> exact_stats;
  __shared__ float lp_slot;
  __shared__ float grad_slot;
  __shared__ float target_logit;
  __shared__ index_t id_slot;

  const cg::cluster_group cluster = cg::this_cluster();
  const auto rank = static_cast<index_t>(cluster.block_rank());
  const auto ranks = static_cast<index_t>(cluster.num_blocks());
  const index_t r = static_cast<index_t>(blockIdx.x) / ranks;
  const float inv_temperature = UnitTemperature ? 1.0f : inv_temperature_arg;
  const float k = math::log2_e<float>() * inv_temperature;

  index_t i = 0;
  index_t t = 0;
  slot_to_token(layout, r, i, t);
  const T* row = logits + r * row_stride;
  T* out = grad_logits + r * grad_row_stride;
  const index_t vectors = vocab / width;
  const index_t tail_begin = vectors * width;
  const index_t begin = rank * slice_vectors;
  const index_t count =
      begin >= vectors ? 0 : (vectors - begin < slice_vectors ? vectors - begin : slice_vectors);
  const bool last = rank == ranks - 1;
  uint4* out_body = reinterpret_cast<uint4*>(out) + begin;

  if (!layout.valid(i, t)) { // the whole cluster takes this branch: no cluster barrier
    const uint4 zero{0u, 0u, 0u, 0u};
    for (index_t v = threadIdx.x; v < count; v += threads) {
      out_body[v] = zero;
    }
    if (last) {
      for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
        out[j] = float_to_logit<T>(0.0f);
      }
    }
    if (rank == 0 && threadIdx.x == 0) {
      sums[r] = Sums{};
      if (log_probs_out != nullptr) {
        log_probs_out[r] = 0.0f;
      }
    }
    return;
  }

  // 1. Bulk-copy the slice into shared memory (thread 0 issues every chunk at once), fold each
  //    chunk into the fast statistics as it lands.
  const index_t chunks = (count + cluster_chunk_vectors - 1) / cluster_chunk_vectors;
  if (threadIdx.x == 0) {
    for (index_t c = 0; c < chunks; ++c) {
      barrier_init(&chunk_ready[c]);
    }
    barrier_init_fence();
    const uint4* body = reinterpret_cast<const uint4*>(row) + begin;
    for (index_t c = 0; c < chunks; ++c) {
      const index_t first = c * cluster_chunk_vectors;
      const index_t n =
          count - first < cluster_chunk_vectors ? count - first : cluster_chunk_vectors;
      const auto bytes = static_cast<unsigned>(n * static_cast<index_t>(sizeof(uint4)));
      barrier_expect_bytes(&chunk_ready[c], bytes);
      bulk_copy_to_shared(slice + first, body + first, bytes, &chunk_ready[c]);
    }
    const auto id = static_cast<index_t>(ids(i, t));
    const bool valid_id = id >= 0 && id < vocab;
    id_slot = valid_id ? id : -1;
    target_logit = valid_id ? logit_to_float(row[id]) : 0.0f; // before any in-place write
  } else if (threadIdx.x == 32) {
    // Prefetch: a throwaway evaluation of the token pass pulls its per-token inputs (old, ref,
    // advantages, row counts) into the cache while the slice streams in.
    warm_lp = 0.0f;
    (void)make_pass(shared_scalar_view{&warm_lp}, shared_scalar_view{&warm_grad})(i, t);
  }
  __syncthreads(); // the barriers are initialised
  math::softmax_fast_state<float> s;
  constexpr int per_thread = static_cast<int>(cluster_chunk_vectors / threads);
  for (index_t c = 0; c < chunks; ++c) {
    barrier_wait_parity(&chunk_ready[c], 0); // each barrier completes once
    const index_t first = c * cluster_chunk_vectors;
    if (first + cluster_chunk_vectors <= count) {
      float values[per_thread * width];
#pragma unroll
      for (int u = 0; u < per_thread; ++u) {
        float part[width];
        unpack<T>(slice[first + threadIdx.x + u * threads], part);
#pragma unroll
        for (int e = 0; e < width; ++e) {
          values[u * width + e] = part[e];
        }
      }
      observe_chunk(s, values, k);
    } else {
      for (index_t v = first + threadIdx.x; v < count; v += threads) {
        float values[width];
        unpack<T>(slice[v], values);
        observe_chunk(s, values, k);
      }
    }
  }
  if (last) {
    for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
      observe_one(s, logit_to_float(row[j]), k);
    }
  }
  using fast_reduce = cub::BlockReduce<math::softmax_fast_state<float>, threads>;
  const auto total = fast_reduce(storage.fast).Reduce(s, softmax_fast_merge_op{});
  if (threadIdx.x == 0) {
    partial = total;
  }

  // 2. Merge the partials of every rank, in rank order (deterministic, the same in every CTA):
  //    one remote read per rank, in parallel, then the merge from local shared memory.
  cluster.sync();
  if (threadIdx.x < ranks) {
    partials[threadIdx.x] = *cluster.map_shared_rank(&partial, static_cast<int>(threadIdx.x));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    math::softmax_fast_state<float> m = partials[0];
    for (index_t q = 1; q < ranks; ++q) {
      m = math::softmax_fast_merge(m, partials[q]);
    }
    merged = m;
  }
  __syncthreads();
  const bool fast = math::softmax_fast_usable(merged); // the same in every CTA of the cluster
  if (fast) {
    cluster.barrier_arrive(); // this CTA is done reading the others' partials
  } else {
    cluster.sync(); // every CTA is done reading the others' partials
    bool finite = true;
    const auto stats = block_row_statistics<threads>(row, vocab, inv_temperature, storage.exact,
                                                     storage.exact_result, finite);
    if (threadIdx.x == 0) {
      exact_stats = stats;
      if (!finite && rank == 0) {
        atomicMin(flags + flag_nonfinite, static_cast<unsigned long long>(r));
      }
    }
    cluster.sync(); // every CTA has read the whole row before anyone writes in place
  }

  // 3. lp, the token pass (d loss / d lp) and the metric sums.
  if (threadIdx.x == 0) {
    const auto stats = fast ? math::softmax_fast_finish(merged) : exact_stats;
    if (id_slot < 0) {
      grad_slot = 0.0f;
      if (rank == 0) {
        atomicMin(flags + flag_bad_id, static_cast<unsigned long long>(r));
        sums[r] = Sums{};
      }
    } else {
      lp_slot = math::log_softmax_at(stats, target_logit, inv_temperature);
      const Sums token =
          make_pass(shared_scalar_view{&lp_slot}, shared_scalar_view{&grad_slot})(i, t);
      if (rank == 0) {
        sums[r] = token;
      }
    }
    if (rank == 0 && log_probs_out != nullptr) {
      log_probs_out[r] = id_slot >= 0 ? lp_slot : 0.0f;
    }
  }
  __syncthreads();

  // 4. d loss / d logits of the slice, from shared memory; the tail from global memory.
  const index_t id = id_slot;
  const float g = grad_slot;
  if (id < 0) {
    const uint4 zero{0u, 0u, 0u, 0u};
    for (index_t v = threadIdx.x; v < count; v += threads) {
      out_body[v] = zero;
    }
    if (last) {
      for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
        out[j] = float_to_logit<T>(0.0f);
      }
    }
  } else if (fast) {
    const float prob_offset = math::softmax_fast_prob_offset(merged);
    for (index_t v = threadIdx.x; v < count; v += threads) {
      __stcs(out_body + v, vector_gradient<false, T>(slice[v], (begin + v) * width, id, k,
                                                     prob_offset, 0.0f, 0.0f, inv_temperature, g));
    }
    if (last) {
      for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
        const float p = math::softmax_fast_prob(logit_to_float(row[j]), k, prob_offset);
        out[j] = float_to_logit<T>(math::log_prob_logit_grad(p, j == id, g, inv_temperature));
      }
    }
  } else {
    const math::softmax_partial<float> stats = exact_stats;
    const float log_sum = math::log(stats.sum);
    for (index_t v = threadIdx.x; v < count; v += threads) {
      out_body[v] = vector_gradient<true, T>(slice[v], (begin + v) * width, id, k, 0.0f, stats.max,
                                             log_sum, inv_temperature, g);
    }
    if (last) {
      for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
        const float log_p =
            math::log_softmax_from(logit_to_float(row[j]), stats.max, log_sum, inv_temperature);
        out[j] = float_to_logit<T>(
            math::token_log_prob_logit_grad(log_p, j == id, g, 0.0f, 0.0f, inv_temperature));
      }
    }
  }
  if (fast) {
    cluster.barrier_wait(); // no CTA exits while another may still read its partial
  }
#else
  (void)layout, (void)logits, (void)vocab, (void)row_stride, (void)grad_logits;
  (void)grad_row_stride, (void)ids, (void)make_pass, (void)inv_temperature_arg;
  (void)log_probs_out, (void)sums, (void)flags, (void)slice_vectors;
#endif
}

} // namespace rlcore::cuda::detail

// The fused objective-from-logits kernel that reads each logits row from HBM exactly once (sm_90):
// a thread-block cluster of C CTAs per token slot, each CTA holding a contiguous slice of the
// row's 16-byte vectors in shared memory (C = 4 for bf16 V = 152,064: 74 KB per CTA, 3 CTAs per
// SM: the static shared memory is kept <= 768 bytes for that).
//
//   1. thread 0 bulk-copies the CTA's slice into shared memory (TMA, every 8 KB chunk issued at
//      once, completion per chunk on an mbarrier) and issues the loads of the token id and of the
//      token pass's inputs (old, A, ref, the row weight) into registers; every thread folds each
//      chunk into base-2 softmax statistics (math/softmax_fast.hpp) as it lands;
//   2. warp 0 sends the CTA's partial statistics (and, from the CTA whose slice holds the token
//      id, the target logit) to every other CTA of the cluster with st.async, completing bytes on
//      their mbarrier; thread 0 waits for the others' and merges all in rank order (the same bits
//      in every CTA). No cluster barrier on this path (one relaxed arrive / wait pair publishes
//      the barriers' initialisation) and no CTA waits for another to exit;
//   3. thread 0 evaluates lp and the generic token pass on registers (rank 0 writes the metric
//      sums and lp), then every thread writes d loss / d logits of its slice from shared memory
//      (two 16-byte vectors per step, streaming stores from registers: TMA bulk stores of the
//      gradient written over the slice were measured 19% slower on the H200).
// HBM traffic: one read and one write of the logits, plus O(M) for per-token data.
//
// Rows whose fast statistics are not usable (NaN / inf logits, or finite logits beyond the fast
// path's range; math/softmax_fast.hpp) are recomputed exactly: every CTA of the cluster re-reads
// the row for math/softmax.hpp's statistics (a cluster barrier keeps the in-place writes behind
// all reads) and writes the gradient with the exact formulas.
//
// AnyStart: a row of V logits at any element start (row_split, logits_kernels.cuh); otherwise
// rows 16-byte aligned (start and stride; head = 0, the code of the aligned rows alone).
// S = slice_vectors:
//   [0, head)           the < 16 bytes before the first 16-byte boundary: rank 0, global memory
//   [head, tail_begin)  the 16-byte vectors: rank q holds vectors [q S, q S + S) in shared memory
//   [tail_begin, V)     the < 16 bytes past the last whole vector: the last rank, global memory
// The head and tail logits are folded into the thread statistics of their rank and their gradient
// is written element by element; only the order of summation depends on the row's alignment. The
// gradient row must have the logits row's 16-byte misalignment (in place, or the same residue of
// start and stride: plan_cluster, logits.cuh). Private: include logits.cuh.
#pragma once

#include "logits_bulk_copy.cuh"
#include "logits_kernels.cuh"

#include <cooperative_groups.h>
#include <cstdint>
#include <type_traits>

namespace rlcore::cuda::detail {

inline constexpr int cluster_logits_threads = 256;
inline constexpr index_t cluster_chunk_vectors = 512; ///< 8 KB per bulk copy and barrier
inline constexpr index_t cluster_max_chunks = 29;     ///< slices up to 232 KB (opt-in max: 227)
inline constexpr int max_cluster_ranks = 8;
/// CTAs per SM the registers must allow: 3 of the default 4-CTA plan (74 KB slices for bf16
/// V = 152,064) share an SM's 228 KB, so the static shared memory stays <= 768 bytes.
inline constexpr int cluster_min_blocks = 3;
static_assert(cluster_chunk_vectors % cluster_logits_threads == 0);

/// W gradients packed into one 16-byte vector of the logits' type (bf16 / fp16: one
/// round-to-nearest conversion per pair).
template <class T>
__device__ inline uint4 pack_gradient(const float (&g)[vector_width<T>]) {
  uint4 packed;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    auto* pairs = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      pairs[w] = __floats2bfloat162_rn(g[2 * w], g[2 * w + 1]);
    }
  } else if constexpr (std::is_same_v<T, __half>) {
    auto* pairs = reinterpret_cast<__half2*>(&packed);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      pairs[w] = __floats2half2_rn(g[2 * w], g[2 * w + 1]);
    }
  } else {
    T* elements = reinterpret_cast<T*>(&packed);
#pragma unroll
    for (int e = 0; e < vector_width<T>; ++e) {
      elements[e] = float_to_logit<T>(g[e]);
    }
  }
  return packed;
}

/// The gradient of one 16-byte vector of logits `raw` (logits first .. first + W - 1): fast path
/// (p from the base-2 offset) unless Exact. The fast path evaluates every logit as a non-target
/// (-g_lp p / tau: one FFMA, one MUFU.EX2, one multiply) and re-evaluates the target's logit only
/// in the one vector that holds it.
template <bool Exact, class T>
__device__ inline uint4 vector_gradient(const uint4& raw, index_t first, index_t id, float k,
                                        float prob_offset, float row_max, float log_sum,
                                        float inv_temperature, float grad_log_prob) {
  constexpr int width = vector_width<T>;
  float values[width];
  unpack<T>(raw, values);
  float g[width];
  if constexpr (Exact) {
#pragma unroll
    for (int e = 0; e < width; ++e) {
      const float log_p = math::log_softmax_from(values[e], row_max, log_sum, inv_temperature);
      g[e] = math::token_log_prob_logit_grad(log_p, first + e == id, grad_log_prob, 0.0f, 0.0f,
                                             inv_temperature);
    }
  } else {
    float p[width];
#pragma unroll
    for (int e = 0; e < width; ++e) {
      p[e] = math::softmax_fast_prob(values[e], k, prob_offset);
      g[e] = math::log_prob_logit_grad(p[e], false, grad_log_prob, inv_temperature);
    }
    if (id >= first && id < first + width) {
#pragma unroll
      for (int e = 0; e < width; ++e) {
        if (first + e == id) {
          g[e] = math::log_prob_logit_grad(p[e], true, grad_log_prob, inv_temperature);
        }
      }
    }
  }
  return pack_gradient<T>(g);
}

/// What one CTA of a cluster sends to every other (st.async): the fast statistics of its slice
/// (16 bytes) and the target logit (4 bytes; from the rank whose slice holds the token id, 0 from
/// the others).
inline constexpr unsigned cluster_partial_bytes = sizeof(math::softmax_fast_state<float>) + 4;
static_assert(sizeof(math::softmax_fast_state<float>) == 16);

/// One token slot per cluster of gridDim-consecutive CTAs (cluster dimension C along x):
/// slice_vectors 16-byte vectors of the row per CTA in dynamic shared memory; rows 16-byte aligned
/// unless AnyStart (then each row's head is read from global memory). Flags and outputs as
/// fused_logits_objective_kernel. MakeTokenPass provides stage(i, t) (the token's inputs, loads
/// issued at the start), weigh (their arithmetic, during the exchange wait) and the token pass over
/// them (make_policy_token_pass, logits.cuh).
template <bool UnitTemperature, bool AnyStart, class T, class Id, class Layout, class MakeTokenPass,
          class Sums>
__global__ void __launch_bounds__(cluster_logits_threads, cluster_min_blocks)
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
  __shared__ alignas(16) math::softmax_fast_state<float> received[max_cluster_ranks]; // rank q
  __shared__ float received_target[max_cluster_ranks];
  __shared__ std::uint64_t chunk_ready[cluster_max_chunks];
  __shared__ std::uint64_t exchange_ready; // completes when every other rank's partial landed
  __shared__ math::softmax_partial<float> exact_stats;
  __shared__ float prob_offset_slot;
  __shared__ float lp_slot;
  __shared__ float grad_slot;
  __shared__ index_t id_slot;
  __shared__ int fast_slot;

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
  index_t row_head = 0; // elements before the first 16-byte boundary
  index_t vectors = vocab / width;
  index_t tail_begin = vectors * width;
  if constexpr (AnyStart) {
    const row_split<T> split(row, vocab);
    row_head = split.head;
    vectors = split.vectors;
    tail_begin = split.tail_begin;
  }
  const index_t head = rank == 0 ? row_head : 0; // head elements this CTA handles
  const index_t begin = rank * slice_vectors;
  const index_t count =
      begin >= vectors ? 0 : (vectors - begin < slice_vectors ? vectors - begin : slice_vectors);
  const bool last = rank == ranks - 1;
  uint4* out_body = reinterpret_cast<uint4*>(out + row_head) + begin;

  if (!layout.valid(i, t)) { // the whole cluster takes this branch: no cluster barrier
    const uint4 zero{0u, 0u, 0u, 0u};
    for (index_t v = threadIdx.x; v < count; v += threads) {
      out_body[v] = zero;
    }
    for (index_t j = threadIdx.x; j < head; j += threads) {
      out[j] = float_to_logit<T>(0.0f);
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

  // 1. Thread 0 issues the bulk copies of the slice (every chunk at once), then the loads of the
  //    token id and of the token pass's inputs into registers: they are used only after the
  //    exchange, so no thread waits for them here. Every chunk is folded into the fast statistics
  //    as it lands.
  const index_t chunks = (count + cluster_chunk_vectors - 1) / cluster_chunk_vectors;
  index_t id = -1;
  float target_logit = 0.0f; // thread 0, from the exchange
  typename MakeTokenPass::staged_inputs staged{};
  if (threadIdx.x == 0) {
    for (index_t c = 0; c < chunks; ++c) {
      barrier_init(&chunk_ready[c]);
    }
    barrier_init(&exchange_ready);
    barrier_init_fence();
    barrier_expect_bytes(&exchange_ready, static_cast<unsigned>(ranks - 1) * cluster_partial_bytes);
    const uint4* body = reinterpret_cast<const uint4*>(row + row_head) + begin;
    for (index_t c = 0; c < chunks; ++c) {
      const index_t first = c * cluster_chunk_vectors;
      const index_t n =
          count - first < cluster_chunk_vectors ? count - first : cluster_chunk_vectors;
      const auto bytes = static_cast<unsigned>(n * static_cast<index_t>(sizeof(uint4)));
      barrier_expect_bytes(&chunk_ready[c], bytes);
      bulk_copy_to_shared(slice + first, body + first, bytes, &chunk_ready[c]);
    }
    id = static_cast<index_t>(ids(i, t));
    staged = make_pass.stage(i, t);
  }
  __syncthreads();          // the barriers are initialised
  cluster_arrive_relaxed(); // ... and visible to the cluster once every CTA has arrived
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
  for (index_t j = threadIdx.x; j < head; j += threads) {
    observe_one(s, logit_to_float(row[j]), k);
  }
  if (last) {
    for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
      observe_one(s, logit_to_float(row[j]), k);
    }
  }
  using fast_reduce = cub::BlockReduce<math::softmax_fast_state<float>, threads>;
  const auto total = fast_reduce(storage.fast).Reduce(s, softmax_fast_merge_op{});

  // 2. Exchange: warp 0 sends this CTA's partial (and the target logit, from the rank holding the
  //    id) to every other rank with st.async, completing bytes on their exchange barrier; then
  //    thread 0 waits for the others' and merges all in rank order (deterministic, the same in
  //    every CTA). Nothing reads another CTA's shared memory, so no CTA waits for the others to
  //    exit.
  cluster_wait(); // every rank's exchange barrier is initialised
  if (threadIdx.x < 32) {
    const bool valid_id = id >= 0 && id < vocab;
    bool in_body = id < tail_begin;
    index_t holder = 0;
    if constexpr (AnyStart) {
      in_body = in_body && id >= row_head;
      holder = in_body ? (id - row_head) / width / slice_vectors : (id < row_head ? 0 : ranks - 1);
    } else {
      const index_t id_vector = id / width;
      holder = id_vector < vectors ? id_vector / slice_vectors : ranks - 1;
    }
    float target = 0.0f;
    if (threadIdx.x == 0 && valid_id && holder == rank) {
      // The head (rank 0) and the tail (the last rank) from global memory, before they are written.
      target =
          in_body ? logit_to_float(reinterpret_cast<const T*>(slice)[id - row_head - begin * width])
                  : logit_to_float(row[id]);
    }
    const uint4 words{__float_as_uint(total.max), __float_as_uint(total.offset),
                      __float_as_uint(total.sum), __float_as_uint(total.weighted)};
    uint4 sent;
    sent.x = __shfl_sync(0xFFFFFFFFu, words.x, 0);
    sent.y = __shfl_sync(0xFFFFFFFFu, words.y, 0);
    sent.z = __shfl_sync(0xFFFFFFFFu, words.z, 0);
    sent.w = __shfl_sync(0xFFFFFFFFu, words.w, 0);
    const unsigned sent_target = __shfl_sync(0xFFFFFFFFu, __float_as_uint(target), 0);
    const auto lane = static_cast<index_t>(threadIdx.x);
    if (lane < ranks && lane != rank) {
      const auto to = static_cast<unsigned>(lane);
      const unsigned barrier = cluster_shared_address(shared_address(&exchange_ready), to);
      store_remote_async(cluster_shared_address(shared_address(&received[rank]), to), sent,
                         barrier);
      store_remote_async(cluster_shared_address(shared_address(&received_target[rank]), to),
                         sent_target, barrier);
    }
    if (threadIdx.x == 0) {
      make_pass.weigh(staged); // its loads have landed by now; the wait below is longer
      barrier_wait_parity(&exchange_ready, 0);
      // By value: selecting a reference to `total` or to a shared slot makes nvcc keep `total` in
      // local memory.
      const auto partial = [&](index_t q) {
        math::softmax_fast_state<float> p = total;
        if (q != rank) {
          p = received[q];
        }
        return p;
      };
      math::softmax_fast_state<float> merged = partial(0);
      for (index_t q = 1; q < ranks; ++q) {
        merged = math::softmax_fast_merge(merged, partial(q));
      }
      if (valid_id) {
        target_logit = holder == rank ? target : received_target[holder];
      }
      const bool fast = math::softmax_fast_usable(merged); // the same in every CTA
      fast_slot = fast ? 1 : 0;
      prob_offset_slot = fast ? math::softmax_fast_prob_offset(merged) : 0.0f;
      id_slot = valid_id ? id : -1;
      grad_slot = 0.0f;
      lp_slot = 0.0f;
      if (fast && valid_id) {
        // 3. lp and the token pass (d loss / d lp, the metric sums): arithmetic on registers.
        lp_slot =
            math::log_softmax_at(math::softmax_fast_finish(merged), target_logit, inv_temperature);
        float grad_lp = 0.0f;
        const Sums token = make_pass(staged, lp_slot, &grad_lp)(i, t);
        grad_slot = grad_lp;
        if (rank == 0) {
          sums[r] = token;
        }
      }
      if (!valid_id && rank == 0) {
        atomicMin(flags + flag_bad_id, static_cast<unsigned long long>(r));
        sums[r] = Sums{};
      }
    }
  }
  __syncthreads();
  const bool fast = fast_slot != 0;
  const index_t token_id = id_slot;
  if (!fast) {
    // Rows the fast statistics cannot take (NaN / inf logits, or out of the fast range): every CTA
    // re-reads the row for the exact statistics; a cluster barrier keeps the in-place writes
    // behind every CTA's reads.
    bool finite = true;
    const auto stats = block_row_statistics<threads>(row, vocab, inv_temperature, storage.exact,
                                                     storage.exact_result, finite);
    if (threadIdx.x == 0) {
      exact_stats = stats;
      if (!finite && rank == 0) {
        atomicMin(flags + flag_nonfinite, static_cast<unsigned long long>(r));
      }
      if (token_id >= 0) {
        lp_slot = math::log_softmax_at(stats, target_logit, inv_temperature);
        float grad_lp = 0.0f;
        const Sums token = make_pass(staged, lp_slot, &grad_lp)(i, t);
        grad_slot = grad_lp;
        if (rank == 0) {
          sums[r] = token;
        }
      }
    }
    cluster.sync(); // every CTA has read the whole row before anyone writes in place
  }
  if (threadIdx.x == 0 && rank == 0 && log_probs_out != nullptr) {
    log_probs_out[r] = token_id >= 0 ? lp_slot : 0.0f;
  }

  // 4. d loss / d logits of the slice, from shared memory; the head and tail from global memory.
  const float g = grad_slot;
  if (token_id < 0) {
    const uint4 zero{0u, 0u, 0u, 0u};
    for (index_t v = threadIdx.x; v < count; v += threads) {
      out_body[v] = zero;
    }
    for (index_t j = threadIdx.x; j < head; j += threads) {
      out[j] = float_to_logit<T>(0.0f);
    }
    if (last) {
      for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
        out[j] = float_to_logit<T>(0.0f);
      }
    }
  } else if (fast) {
    const float prob_offset = prob_offset_slot;
    // Two vectors per thread per step, their shared-memory loads issued together (H200: 0.2-0.5%
    // faster than one or four, docs/benchmarks.md), then the remainder one by one.
    constexpr int unroll = 2;
    index_t v = threadIdx.x;
    for (; v + (unroll - 1) * threads < count; v += unroll * threads) {
      uint4 raw[unroll];
#pragma unroll
      for (int u = 0; u < unroll; ++u) {
        raw[u] = slice[v + u * threads];
      }
#pragma unroll
      for (int u = 0; u < unroll; ++u) {
        const index_t w = v + u * threads;
        __stcs(out_body + w,
               vector_gradient<false, T>(raw[u], row_head + (begin + w) * width, token_id, k,
                                         prob_offset, 0.0f, 0.0f, inv_temperature, g));
      }
    }
    for (; v < count; v += threads) {
      __stcs(out_body + v,
             vector_gradient<false, T>(slice[v], row_head + (begin + v) * width, token_id, k,
                                       prob_offset, 0.0f, 0.0f, inv_temperature, g));
    }
    if (last) {
      for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
        const float p = math::softmax_fast_prob(logit_to_float(row[j]), k, prob_offset);
        out[j] = float_to_logit<T>(math::log_prob_logit_grad(p, j == token_id, g, inv_temperature));
      }
    }
    for (index_t j = threadIdx.x; j < head; j += threads) { // the same for the head
      const float p = math::softmax_fast_prob(logit_to_float(row[j]), k, prob_offset);
      out[j] = float_to_logit<T>(math::log_prob_logit_grad(p, j == token_id, g, inv_temperature));
    }
  } else {
    const math::softmax_partial<float> stats = exact_stats;
    const float log_sum = math::log(stats.sum);
    for (index_t v = threadIdx.x; v < count; v += threads) {
      out_body[v] = vector_gradient<true, T>(slice[v], row_head + (begin + v) * width, token_id, k,
                                             0.0f, stats.max, log_sum, inv_temperature, g);
    }
    if (last) {
      for (index_t j = tail_begin + threadIdx.x; j < vocab; j += threads) {
        const float log_p =
            math::log_softmax_from(logit_to_float(row[j]), stats.max, log_sum, inv_temperature);
        out[j] = float_to_logit<T>(
            math::token_log_prob_logit_grad(log_p, j == token_id, g, 0.0f, 0.0f, inv_temperature));
      }
    }
    for (index_t j = threadIdx.x; j < head; j += threads) { // the same for the head
      const float log_p =
          math::log_softmax_from(logit_to_float(row[j]), stats.max, log_sum, inv_temperature);
      out[j] = float_to_logit<T>(
          math::token_log_prob_logit_grad(log_p, j == token_id, g, 0.0f, 0.0f, inv_temperature));
    }
  }
#else
  (void)layout, (void)logits, (void)vocab, (void)row_stride, (void)grad_logits;
  (void)grad_row_stride, (void)ids, (void)make_pass, (void)inv_temperature_arg;
  (void)log_probs_out, (void)sums, (void)flags, (void)slice_vectors;
#endif
}

} // namespace rlcore::cuda::detail

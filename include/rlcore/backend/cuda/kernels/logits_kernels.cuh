// Logits kernels: one block per logits row, 16-byte vector loads (8 bf16 / 8 fp16 / 4 fp32
// logits), fp32 accumulation. Rows need not be 16-byte aligned (vocab 32001 in bf16): each row is
// split into a scalar head up to the first 16-byte boundary, a vector body and a scalar tail, and
// no lane ever observes an element past the vocabulary, so every vocabulary size is exact.
//
// Two ways to the softmax statistics of a row:
//  - fast (thread_fast_statistics): the base-2 online softmax of math/softmax_fast.hpp, one FFMA +
//    one MUFU.EX2 + two adds per logit, the maximum raised once per chunk of 8 vectors; no guards.
//  - exact (block_row_statistics): math/softmax.hpp's guarded softmax_observe / softmax_merge, and
//    whether every logit was finite. Used for the rows whose fast statistics are not usable (a NaN
//    or +-inf logit, or a finite logit beyond the fast path's range): they are read again.
// The kernels report, per call, the first row with an out-of-range token id (flags[0]) and the
// first valid row with a NaN / inf logit (flags[1]); the entry points turn them into
// rlcore::invalid_argument. Private: include logits.cuh.
#pragma once

#include "../../../config.hpp"
#include "../../../math/exp2_fast.hpp"
#include "../../../math/softmax.hpp"
#include "../../../math/softmax_fast.hpp"
#include "execution_kernels.cuh"

#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace rlcore::cuda::detail {

inline constexpr int logits_threads = 256;
inline constexpr int logits_unroll = 2; ///< 16-byte vectors per thread in flight (exact path)
inline constexpr int fast_unroll = 4;   ///< 16-byte vectors per thread in flight (fast path)

/// flags[0]: the first logits row with a token id outside [0, V); flags[1]: the first valid row
/// with a NaN or +-inf logit. no_violation (all bits set) when none.
inline constexpr int logits_flag_count = 2;
inline constexpr int flag_bad_id = 0;
inline constexpr int flag_nonfinite = 1;
/// The fused forward + backward kernel runs one 1024-thread block per SM, so that the rows in
/// flight (132 x V logits) stay in L2 between the statistics pass and the gradient pass.
inline constexpr int fused_logits_threads = 1024;

template <class T>
__device__ inline float logit_to_float(T x) {
  return static_cast<float>(x);
}
template <class T>
__device__ inline T float_to_logit(float x) {
  return static_cast<T>(x);
}
template <>
__device__ inline __nv_bfloat16 float_to_logit<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ inline __half float_to_logit<__half>(float x) {
  return __float2half_rn(x);
}

/// Logits per 16-byte vector.
template <class T>
inline constexpr int vector_width = static_cast<int>(16 / sizeof(T));

/// A row of register values for math::row_softmax.
struct register_row {
  const float* values;
  __device__ float operator()(index_t j) const { return values[j]; }
};

struct softmax_merge_op {
  float inv_temperature;
  __device__ math::softmax_partial<float> operator()(const math::softmax_partial<float>& a,
                                                     const math::softmax_partial<float>& b) const {
    return math::softmax_merge(a, b, inv_temperature);
  }
};

/// The head / body / tail split of a row of `vocab` logits starting at `row`.
template <class T>
struct row_split {
  index_t head;    ///< scalar elements before the first 16-byte boundary
  index_t vectors; ///< 16-byte vectors of the body
  index_t tail_begin;

  __device__ row_split(const T* row, index_t vocab) {
    const auto misalign = static_cast<index_t>(reinterpret_cast<std::uintptr_t>(row) & 15u);
    index_t h = misalign == 0 ? 0 : (16 - misalign) / static_cast<index_t>(sizeof(T));
    if (misalign % static_cast<index_t>(sizeof(T)) != 0) {
      h = vocab; // not even element-aligned to a vector boundary: all scalar
    }
    head = h < vocab ? h : vocab;
    vectors = (vocab - head) / vector_width<T>;
    tail_begin = head + vectors * vector_width<T>;
  }
};

template <class T>
__device__ inline void unpack(const uint4& raw, float (&out)[vector_width<T>]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    // bf16 is the high half of a float: two bit operations per bf16x2 word.
    const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      out[2 * w] = __uint_as_float(words[w] << 16);
      out[2 * w + 1] = __uint_as_float(words[w] & 0xFFFF0000u);
    }
  } else {
    const T* elements = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < vector_width<T>; ++e) {
      out[e] = logit_to_float(elements[e]);
    }
  }
}

/// Adds n logits held in registers to the fast statistics: the chunk's maximum first (one raise
/// per chunk), then one softmax_fast_observe per logit.
template <int N>
__device__ inline void observe_chunk(math::softmax_fast_state<float>& s, const float (&x)[N],
                                     float k) {
  float chunk_max = x[0];
#pragma unroll
  for (int e = 1; e < N; ++e) {
    chunk_max = math::max_fast(chunk_max, x[e]);
  }
  math::softmax_fast_raise(s, chunk_max, k);
#pragma unroll
  for (int e = 0; e < N; ++e) {
    math::softmax_fast_observe(s, x[e], k);
  }
}

/// One logit (head / tail elements) added to the fast statistics.
__device__ inline void observe_one(math::softmax_fast_state<float>& s, float x, float k) {
  math::softmax_fast_raise(s, x, k);
  math::softmax_fast_observe(s, x, k);
}

/// This thread's share of `count` 16-byte vectors at `body` (vectors threadIdx.x + j * Threads)
/// folded into s, software-pipelined: the fast_unroll loads of the next step are issued before the
/// current step's arithmetic, so 2 x fast_unroll x 16 bytes per thread stay in flight.
template <int Threads, class T>
__device__ inline void thread_fast_statistics(math::softmax_fast_state<float>& s, const uint4* body,
                                              index_t count, float k) {
  constexpr int width = vector_width<T>;
  constexpr index_t step = index_t{fast_unroll} * Threads;
  index_t v = threadIdx.x;
  uint4 next[fast_unroll];
  bool have = v + (fast_unroll - 1) * Threads < count;
  if (have) {
#pragma unroll
    for (int u = 0; u < fast_unroll; ++u) {
      next[u] = __ldcs(body + v + u * Threads);
    }
  }
  while (have) {
    uint4 raw[fast_unroll];
#pragma unroll
    for (int u = 0; u < fast_unroll; ++u) {
      raw[u] = next[u];
    }
    v += step;
    have = v + (fast_unroll - 1) * Threads < count;
    if (have) {
#pragma unroll
      for (int u = 0; u < fast_unroll; ++u) {
        next[u] = __ldcs(body + v + u * Threads);
      }
    }
    float values[fast_unroll * width];
#pragma unroll
    for (int u = 0; u < fast_unroll; ++u) {
      float part[width];
      unpack<T>(raw[u], part);
#pragma unroll
      for (int e = 0; e < width; ++e) {
        values[u * width + e] = part[e];
      }
    }
    observe_chunk(s, values, k);
  }
  for (; v < count; v += Threads) {
    float values[width];
    unpack<T>(__ldcs(body + v), values);
    observe_chunk(s, values, k);
  }
}

struct softmax_fast_merge_op {
  __device__ math::softmax_fast_state<float>
  operator()(const math::softmax_fast_state<float>& a,
             const math::softmax_fast_state<float>& b) const {
    return math::softmax_fast_merge(a, b);
  }
};

/// Fast statistics of a whole row (head, vector body, tail), block-reduced; valid in every thread
/// on return. k = log2(e) / tau.
template <int Threads, class T>
__device__ math::softmax_fast_state<float> block_row_fast_statistics(
    const T* row, index_t vocab, float k,
    typename cub::BlockReduce<math::softmax_fast_state<float>, Threads>::TempStorage& storage,
    math::softmax_fast_state<float>& shared_result) {
  const row_split<T> split(row, vocab);
  math::softmax_fast_state<float> s;
  for (index_t j = threadIdx.x; j < split.head; j += Threads) {
    observe_one(s, logit_to_float(row[j]), k);
  }
  thread_fast_statistics<Threads, T>(s, reinterpret_cast<const uint4*>(row + split.head),
                                     split.vectors, k);
  for (index_t j = split.tail_begin + threadIdx.x; j < vocab; j += Threads) {
    observe_one(s, logit_to_float(row[j]), k);
  }
  using block_reduce = cub::BlockReduce<math::softmax_fast_state<float>, Threads>;
  const auto total = block_reduce(storage).Reduce(s, softmax_fast_merge_op{});
  if (threadIdx.x == 0) {
    shared_result = total;
  }
  __syncthreads();
  return shared_result;
}

/// The exact block-wide softmax statistics of one row (valid in every thread on return), and in
/// `finite` (every thread) whether every logit of the row was finite.
template <int Threads, class T>
__device__ math::softmax_partial<float> block_row_statistics(
    const T* row, index_t vocab, float inv_temperature,
    typename cub::BlockReduce<math::softmax_partial<float>, Threads>::TempStorage& storage,
    math::softmax_partial<float>& shared_result, bool& finite) {
  constexpr int width = vector_width<T>;
  const row_split<T> split(row, vocab);
  math::softmax_partial<float> stats;
  bool all_finite = true;
  for (index_t j = threadIdx.x; j < split.head; j += Threads) {
    const float x = logit_to_float(row[j]);
    all_finite = all_finite && math::isfinite(x);
    math::softmax_observe(stats, x, inv_temperature);
  }
  const uint4* body = reinterpret_cast<const uint4*>(row + split.head);
  index_t v = threadIdx.x;
  for (; v + (logits_unroll - 1) * Threads < split.vectors; v += logits_unroll * Threads) {
    uint4 raw[logits_unroll];
#pragma unroll
    for (int u = 0; u < logits_unroll; ++u) {
      raw[u] = body[v + u * Threads];
    }
    float values[logits_unroll * width];
#pragma unroll
    for (int u = 0; u < logits_unroll; ++u) {
      float part[width];
      unpack<T>(raw[u], part);
#pragma unroll
      for (int e = 0; e < width; ++e) {
        values[u * width + e] = part[e];
      }
    }
    const auto tile =
        math::row_softmax<float>(register_row{values}, logits_unroll * width, inv_temperature);
    all_finite = all_finite && tile.finite;
    stats = math::softmax_merge(stats, tile.stats, inv_temperature);
  }
  for (; v < split.vectors; v += Threads) {
    float values[width];
    unpack<T>(body[v], values);
    const auto tile = math::row_softmax<float>(register_row{values}, width, inv_temperature);
    all_finite = all_finite && tile.finite;
    stats = math::softmax_merge(stats, tile.stats, inv_temperature);
  }
  for (index_t j = split.tail_begin + threadIdx.x; j < vocab; j += Threads) {
    const float x = logit_to_float(row[j]);
    all_finite = all_finite && math::isfinite(x);
    math::softmax_observe(stats, x, inv_temperature);
  }
  using block_reduce = cub::BlockReduce<math::softmax_partial<float>, Threads>;
  const auto total = block_reduce(storage).Reduce(stats, softmax_merge_op{inv_temperature});
  if (threadIdx.x == 0) {
    shared_result = total;
  }
  finite = __syncthreads_and(all_finite ? 1 : 0) != 0;
  return shared_result;
}

/// The statistics of one row for the forward and the gradient: the fast ones when usable,
/// otherwise the exact ones (the row is read again); `finite` says whether every logit was finite
/// (the fast statistics are usable only then). Valid in every thread on return.
template <int Threads>
struct row_statistics_storage {
  typename cub::BlockReduce<math::softmax_fast_state<float>, Threads>::TempStorage fast;
  typename cub::BlockReduce<math::softmax_partial<float>, Threads>::TempStorage exact;
  math::softmax_fast_state<float> fast_result;
  math::softmax_partial<float> exact_result;
};

template <int Threads, class T>
__device__ math::softmax_partial<float>
block_row_statistics_checked(const T* row, index_t vocab, float inv_temperature,
                             row_statistics_storage<Threads>& storage, bool& finite) {
  const float k = math::log2_e<float>() * inv_temperature;
  const auto fast =
      block_row_fast_statistics<Threads>(row, vocab, k, storage.fast, storage.fast_result);
  if (math::softmax_fast_usable(fast)) {
    finite = true;
    return math::softmax_fast_finish(fast);
  }
  return block_row_statistics<Threads>(row, vocab, inv_temperature, storage.exact,
                                       storage.exact_result, finite);
}

/// Forward: per row r, lp[r] = log softmax(z_r / tau)[id_r] and H[r] (when entropy != null);
/// rows with mask[r] == 0 get 0 and are not read; ids outside [0, V) record the first such row in
/// flags[flag_bad_id] and get 0; rows with a NaN / inf logit record the first such row in
/// flags[flag_nonfinite] and get the exact formulas' values (-inf logits are probability 0; NaN
/// and +inf give NaN: the `propagate` policy).
/// UnitTemperature: tau == 1 is a compile-time constant. 4 blocks per SM: 64 registers, no spill
/// (without the bound ptxas picks 64 registers for bf16 / fp16 and spills 8 bytes).
template <bool UnitTemperature, class T, class Id, class Mask>
__global__ void __launch_bounds__(logits_threads, 4)
    token_log_probs_kernel(const T* logits, index_t rows, index_t vocab, index_t row_stride,
                           const Id* ids, const Mask* mask, float* log_probs, float* entropy,
                           float inv_temperature_arg, unsigned long long* flags) {
  const float inv_temperature = UnitTemperature ? 1.0f : inv_temperature_arg;
  __shared__ cub::Uninitialized<row_statistics_storage<logits_threads>> storage_memory;
  auto& storage = storage_memory.Alias();
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    if (mask != nullptr && mask[r] == Mask(0)) {
      if (threadIdx.x == 0) {
        log_probs[r] = 0.0f;
        if (entropy != nullptr) {
          entropy[r] = 0.0f;
        }
      }
      continue;
    }
    const T* row = logits + r * row_stride;
    // Thread 0 issues the id load now: its latency overlaps the row's streaming.
    const index_t id = threadIdx.x == 0 ? static_cast<index_t>(ids[r]) : 0;
    bool finite = true;
    const auto stats =
        block_row_statistics_checked<logits_threads>(row, vocab, inv_temperature, storage, finite);
    if (threadIdx.x == 0) {
      if (!finite) {
        atomicMin(flags + flag_nonfinite, static_cast<unsigned long long>(r));
      }
      float lp = 0.0f;
      float h = 0.0f;
      if (id < 0 || id >= vocab) {
        atomicMin(flags + flag_bad_id, static_cast<unsigned long long>(r));
      } else {
        lp = math::log_softmax_at(stats, logit_to_float(row[id]), inv_temperature);
        h = math::softmax_entropy(stats);
      }
      log_probs[r] = lp;
      if (entropy != nullptr) {
        entropy[r] = h;
      }
    }
    __syncthreads(); // the statistics storage is reused by the next row
  }
}

/// d logits for one row: g_lp * (1[j == id] - p_j) / tau written as T (16-byte stores where the
/// output row has the input row's alignment, scalar otherwise). `out` may alias `row`.
template <int Threads, class T>
__device__ void write_row_gradient(const T* row, T* out, index_t vocab, index_t id,
                                   const math::softmax_partial<float>& stats, float inv_temperature,
                                   float grad_log_prob) {
  constexpr int width = vector_width<T>;
  const row_split<T> split(row, vocab);
  const bool same_alignment =
      ((reinterpret_cast<std::uintptr_t>(row) ^ reinterpret_cast<std::uintptr_t>(out)) & 15u) == 0;
  const float entropy = 0.0f; // no entropy term in this gradient
  const auto gradient = [&](float z, index_t j) {
    const float log_p = math::log_softmax_at(stats, z, inv_temperature);
    return math::token_log_prob_logit_grad(log_p, j == id, grad_log_prob, 0.0f, entropy,
                                           inv_temperature);
  };
  if (!same_alignment) {
    for (index_t j = threadIdx.x; j < vocab; j += Threads) {
      out[j] = float_to_logit<T>(gradient(logit_to_float(row[j]), j));
    }
    return;
  }
  for (index_t j = threadIdx.x; j < split.head; j += Threads) {
    out[j] = float_to_logit<T>(gradient(logit_to_float(row[j]), j));
  }
  const uint4* body = reinterpret_cast<const uint4*>(row + split.head);
  uint4* out_body = reinterpret_cast<uint4*>(out + split.head);
  for (index_t v = threadIdx.x; v < split.vectors; v += Threads) {
    float values[width];
    unpack<T>(body[v], values);
    uint4 packed;
    T* elements = reinterpret_cast<T*>(&packed);
    const index_t first = split.head + v * width;
#pragma unroll
    for (int e = 0; e < width; ++e) {
      elements[e] = float_to_logit<T>(gradient(values[e], first + e));
    }
    out_body[v] = packed;
  }
  for (index_t j = split.tail_begin + threadIdx.x; j < vocab; j += Threads) {
    out[j] = float_to_logit<T>(gradient(logit_to_float(row[j]), j));
  }
}

/// Zeroes one row of `vocab` T (masked token slots of the fused backward).
template <int Threads, class T>
__device__ void zero_row(T* out, index_t vocab) {
  for (index_t j = threadIdx.x; j < vocab; j += Threads) {
    out[j] = float_to_logit<T>(0.0f);
  }
}

/// A per-token view onto one shared-memory scalar: lets the generic per-token objective functor
/// (policy_token_pass) read the log-prob this block just computed and write its gradient.
struct shared_scalar_view {
  static constexpr index_t col_stride = 0; ///< every (i, t) is the one slot
  float* slot;
  __device__ float& operator()(index_t, index_t) const { return *slot; }
};

/// Fused GRPO (any per-token policy objective) from logits, forward and backward in one kernel,
/// the two-pass fallback of the cluster kernel (logits_cluster_kernels.cuh) for rows that are not
/// 16-byte aligned or too long for a cluster's shared memory: per token slot r (block per slot),
/// pass 1 reads the row for its exact softmax statistics, thread 0 computes lp and runs the generic
/// token pass (loss terms, d loss / d lp, metric sums -> sums[r]), pass 2 re-reads the row (from
/// L2) and writes d loss / d logits once. Flags as token_log_probs_kernel.
template <bool UnitTemperature, class T, class Id, class Layout, class MakeTokenPass, class Sums>
__global__ void __launch_bounds__(fused_logits_threads, 1)
    fused_logits_objective_kernel(Layout layout, const T* logits, index_t vocab, index_t row_stride,
                                  T* grad_logits, index_t grad_row_stride, Id ids,
                                  MakeTokenPass make_pass, float inv_temperature_arg,
                                  float* log_probs_out, Sums* sums, unsigned long long* flags) {
  const float inv_temperature = UnitTemperature ? 1.0f : inv_temperature_arg;
  using block_reduce = cub::BlockReduce<math::softmax_partial<float>, fused_logits_threads>;
  __shared__ typename block_reduce::TempStorage storage;
  __shared__ math::softmax_partial<float> row_stats;
  __shared__ float lp_slot;
  __shared__ float grad_slot;
  __shared__ index_t id_slot;
  const index_t slots = layout.token_slots();
  for (index_t r = blockIdx.x; r < slots; r += gridDim.x) {
    index_t i = 0;
    index_t t = 0;
    slot_to_token(layout, r, i, t);
    T* out = grad_logits + r * grad_row_stride;
    if (!layout.valid(i, t)) {
      zero_row<fused_logits_threads>(out, vocab);
      if (threadIdx.x == 0) {
        sums[r] = Sums{};
        if (log_probs_out != nullptr) {
          log_probs_out[r] = 0.0f;
        }
      }
      continue;
    }
    const T* row = logits + r * row_stride;
    bool finite = true;
    const auto stats = block_row_statistics<fused_logits_threads>(row, vocab, inv_temperature,
                                                                  storage, row_stats, finite);
    if (threadIdx.x == 0) {
      if (!finite) {
        atomicMin(flags + flag_nonfinite, static_cast<unsigned long long>(r));
      }
      const auto id = static_cast<index_t>(ids(i, t));
      if (id < 0 || id >= vocab) {
        atomicMin(flags + flag_bad_id, static_cast<unsigned long long>(r));
        id_slot = -1;
        grad_slot = 0.0f;
        sums[r] = Sums{};
      } else {
        id_slot = id;
        lp_slot = math::log_softmax_at(stats, logit_to_float(row[id]), inv_temperature);
        sums[r] = make_pass(shared_scalar_view{&lp_slot}, shared_scalar_view{&grad_slot})(i, t);
      }
      if (log_probs_out != nullptr) {
        log_probs_out[r] = id_slot >= 0 ? lp_slot : 0.0f;
      }
    }
    __syncthreads();
    if (id_slot < 0) {
      zero_row<fused_logits_threads>(out, vocab);
    } else {
      write_row_gradient<fused_logits_threads>(row, out, vocab, id_slot, stats, inv_temperature,
                                               grad_slot);
    }
    __syncthreads(); // shared slots are reused by the next row
  }
}

/// *out = ids(i, t) of token slot r (error path of the fused kernel's id check).
template <class Layout, class Ids>
__global__ void read_token_id_kernel(Layout layout, Ids ids, index_t r, long long* out) {
  index_t i = 0;
  index_t t = 0;
  slot_to_token(layout, r, i, t);
  *out = static_cast<long long>(ids(i, t));
}

} // namespace rlcore::cuda::detail

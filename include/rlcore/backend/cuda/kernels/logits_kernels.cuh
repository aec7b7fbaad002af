// Logits kernels: one block per logits row, 16-byte vector loads (8 bf16 / 8 fp16 / 4 fp32
// logits), fp32 accumulation, the softmax statistics of math/softmax.hpp (row_softmax over each
// thread's registers, softmax_merge across threads and tiles). Rows need not be 16-byte aligned
// (vocab 32001 in bf16): each row is split into a scalar head up to the first 16-byte boundary,
// a vector body and a scalar tail, and no lane ever observes an element past the vocabulary, so
// every vocabulary size is exact. Private: include logits.cuh.
#pragma once

#include "../../../config.hpp"
#include "../../../math/softmax.hpp"
#include "execution_kernels.cuh"

#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace rlcore::cuda::detail {

inline constexpr int logits_threads = 512;
inline constexpr int logits_unroll = 2; ///< 16-byte vectors per thread in flight per step
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
  const T* elements = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int e = 0; e < vector_width<T>; ++e) {
    out[e] = logit_to_float(elements[e]);
  }
}

/// The block-wide softmax statistics of one row (valid in every thread on return).
template <int Threads, class T>
__device__ math::softmax_partial<float> block_row_statistics(
    const T* row, index_t vocab, float inv_temperature,
    typename cub::BlockReduce<math::softmax_partial<float>, Threads>::TempStorage& storage,
    math::softmax_partial<float>& shared_result) {
  constexpr int width = vector_width<T>;
  const row_split<T> split(row, vocab);
  math::softmax_partial<float> stats;
  for (index_t j = threadIdx.x; j < split.head; j += Threads) {
    math::softmax_observe(stats, logit_to_float(row[j]), inv_temperature);
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
    stats = math::softmax_merge(stats, tile.stats, inv_temperature);
  }
  for (; v < split.vectors; v += Threads) {
    float values[width];
    unpack<T>(body[v], values);
    const auto tile = math::row_softmax<float>(register_row{values}, width, inv_temperature);
    stats = math::softmax_merge(stats, tile.stats, inv_temperature);
  }
  for (index_t j = split.tail_begin + threadIdx.x; j < vocab; j += Threads) {
    math::softmax_observe(stats, logit_to_float(row[j]), inv_temperature);
  }
  using block_reduce = cub::BlockReduce<math::softmax_partial<float>, Threads>;
  const auto total = block_reduce(storage).Reduce(stats, softmax_merge_op{inv_temperature});
  if (threadIdx.x == 0) {
    shared_result = total;
  }
  __syncthreads();
  return shared_result;
}

/// Forward: per row r, lp[r] = log softmax(z_r / tau)[id_r] and H[r] (when entropy != null);
/// rows with mask[r] == 0 get 0 and are not read; ids outside [0, V) record the first such row in
/// *bad_id and get 0.
/// UnitTemperature: tau == 1 is a compile-time constant (one multiply fewer per logit).
template <bool UnitTemperature, class T, class Id, class Mask>
__global__ void __launch_bounds__(logits_threads)
    token_log_probs_kernel(const T* logits, index_t rows, index_t vocab, index_t row_stride,
                           const Id* ids, const Mask* mask, float* log_probs, float* entropy,
                           float inv_temperature_arg, unsigned long long* bad_id) {
  const float inv_temperature = UnitTemperature ? 1.0f : inv_temperature_arg;
  using block_reduce = cub::BlockReduce<math::softmax_partial<float>, logits_threads>;
  __shared__ typename block_reduce::TempStorage storage;
  __shared__ math::softmax_partial<float> row_stats;
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
    const auto stats =
        block_row_statistics<logits_threads>(row, vocab, inv_temperature, storage, row_stats);
    if (threadIdx.x == 0) {
      const auto id = static_cast<index_t>(ids[r]);
      float lp = 0.0f;
      float h = 0.0f;
      if (id < 0 || id >= vocab) {
        atomicMin(bad_id, static_cast<unsigned long long>(r));
      } else {
        lp = math::log_softmax_at(stats, logit_to_float(row[id]), inv_temperature);
        h = math::softmax_entropy(stats);
      }
      log_probs[r] = lp;
      if (entropy != nullptr) {
        entropy[r] = h;
      }
    }
    __syncthreads(); // row_stats and storage are reused by the next row
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
  float* slot;
  __device__ float& operator()(index_t, index_t) const { return *slot; }
};

/// Fused GRPO (any per-token policy objective) from logits, forward and backward in one kernel:
/// per token slot r (block per slot), pass 1 reads the row for its softmax statistics, thread 0
/// computes lp and runs the generic token pass (loss terms, d loss / d lp, metric sums -> sums[r]),
/// pass 2 re-reads the row (from L2) and writes d loss / d logits once.
template <bool UnitTemperature, class T, class Id, class Layout, class MakeTokenPass, class Sums>
__global__ void __launch_bounds__(fused_logits_threads, 1)
    fused_logits_objective_kernel(Layout layout, const T* logits, index_t vocab, index_t row_stride,
                                  T* grad_logits, index_t grad_row_stride, Id ids,
                                  MakeTokenPass make_pass, float inv_temperature_arg,
                                  float* log_probs_out, Sums* sums, unsigned long long* bad_id) {
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
    const auto stats =
        block_row_statistics<fused_logits_threads>(row, vocab, inv_temperature, storage, row_stats);
    if (threadIdx.x == 0) {
      const auto id = static_cast<index_t>(ids(i, t));
      if (id < 0 || id >= vocab) {
        atomicMin(bad_id, static_cast<unsigned long long>(r));
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

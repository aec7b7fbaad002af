// Token log-probs and entropy from logits on the GPU, and the fused GRPO objective from logits.
//
// Shape legend: M token slots (logits rows), V vocabulary; logits are bf16 (__nv_bfloat16), fp16
// (__half) or fp32, contiguous along V (col_stride 1) with any row stride; every statistic is
// accumulated in fp32: the base-2 online softmax of math/softmax_fast.hpp (one MUFU.EX2 per
// logit), with math/softmax.hpp's exact formulas for rows the fast path cannot take (non-finite or
// out-of-range logits). Exact for any V (kernels/logits_kernels.cuh).
//
//   token_log_probs(d_temp, temp_bytes, logits, ids, mask, lp_out, entropy_out, temperature, s)
//       lp[r] = x[r, id_r] - logsumexp(x[r, :]), H[r] = -sum_v p_v log p_v, x = z / tau.
//       CUB-style: d_temp == nullptr sets temp_bytes and returns; otherwise asynchronous on s.
//       check_token_log_probs(d_temp, ids, V, policy, s) then waits and throws for ids outside
//       [0, V) and (policy error) NaN / inf logits in valid rows; check_token_ids: ids only.
//   token_log_probs(logits, ids, mask, lp_out, entropy_out, options | temperature, ctx)
//       the same, allocating through ctx.resource, and checking (waits).
//   policy_loss_from_logits(layout, logits, token_ids, old, advantages, ref, grad_logits_out,
//                           options, logits_opts, ctx [, lp_out])
//   grpo_loss_from_logits(layout, logits, token_ids, old, ref, advantages, grad_logits_out,
//                         grpo_options, logits_opts, ctx [, lp_out])
//       the policy objective of objective/policy.hpp with lp taken from the logits, forward and
//       backward in one kernel: d loss / d logits = g_lp (onehot(id) - p) / tau written once (may
//       be the logits themselves: in place), O(M) extra memory. On sm_90, one thread-block
//       cluster per row holds the row's 16-byte vectors in shared memory (rows at any element
//       start; the gradient row offset from a 16-byte boundary like the logits row: in place or
//       the same layout; kernels/logits_cluster_kernels.cuh): the logits are read from HBM once.
//       Waits for the loss and metrics.
//   policy_loss_from_logits(d_temp, temp_bytes, layout, logits, ... as above)
//   finish_policy_loss_from_logits(d_temp, layout, token_ids, V, options, logits_opts, ctx)
//       CUB-style two-phase form of the same: d_temp == nullptr sets temp_bytes and returns;
//       otherwise enqueued on ctx.stream without waiting; finish_ waits, returns the loss and
//       metrics and throws for the errors the kernels found.
#pragma once

#include "../../objective/aggregate.hpp"
#include "../../objective/detail/policy_pass.hpp"
#include "../../objective/grpo.hpp"
#include "../../objective/logits_common.hpp"
#include "../../objective/metrics.hpp"
#include "../../objective/policy.hpp"
#include "execution.cuh"
#include "kernels/logits_cluster_kernels.cuh"
#include "kernels/logits_kernels.cuh"
#include "kernels/validation_kernels.cuh"
#include "launch.cuh"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>
#include <type_traits>

namespace rlcore::cuda {
namespace detail {

template <class T>
constexpr bool is_logit_type =
    std::is_same_v<
        std::remove_cv_t<T>,
        float> || std::is_same_v<std::remove_cv_t<T>, __half> || std::is_same_v<std::remove_cv_t<T>, __nv_bfloat16>;

inline float checked_inverse_temperature(const char* function, double temperature) {
  const auto inv = static_cast<float>(1.0 / temperature);
  rlcore::detail::require(temperature > 0.0 && math::isfinite(temperature) && math::isfinite(inv),
                          function, "temperature",
                          "expected a finite temperature > 0 whose inverse is finite, got ",
                          temperature);
  return inv;
}

template <class T>
void check_logits_view(const char* function, const char* argument,
                       const matrix_view<T, device_space>& logits, index_t rows) {
  rlcore::detail::require(logits.cols >= 1, function, argument,
                          "expected a vocabulary of at least 1 column, got ", logits.cols);
  rlcore::detail::require(logits.rows == rows, function, argument, "expected ", rows,
                          " rows (one per token slot), got ", logits.rows);
  rlcore::detail::require(logits.col_stride == 1, function, argument,
                          "expected contiguous vocabulary (col_stride 1), got col_stride ",
                          logits.col_stride);
}

inline unsigned row_grid(index_t rows) {
  return static_cast<unsigned>(rows < max_grid_blocks ? rows : max_grid_blocks);
}

/// The two flags of a logits kernel call (flag_bad_id, flag_nonfinite); waits for `stream`.
inline std::array<unsigned long long, logits_flag_count>
read_logits_flags(const unsigned long long* d_flags, cudaStream_t stream) {
  std::array<unsigned long long, logits_flag_count> flags{};
  RLCORE_CUDA_CHECK(
      cudaMemcpyAsync(flags.data(), d_flags, sizeof(flags), cudaMemcpyDeviceToHost, stream));
  RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return flags;
}

/// Throws naming `token_ids` if flags[flag_bad_id] is set, then (policy error) naming `logits` if
/// flags[flag_nonfinite] is set, with the CPU path's message (rlcore::detail::throw_on_issues).
template <class IdAt>
void report_logits_flags(const char* function,
                         const std::array<unsigned long long, logits_flag_count>& flags,
                         index_t vocab, nonfinite_logits_policy policy, const IdAt& id_at) {
  if (flags[flag_bad_id] != no_violation) {
    const auto r = static_cast<index_t>(flags[flag_bad_id]);
    rlcore::detail::throw_invalid(function, "token_ids", "expected ids in [0, V = ", vocab,
                                  "), got ", id_at(r), " at logits row ", r);
  }
  if (policy == nonfinite_logits_policy::error && flags[flag_nonfinite] != no_violation) {
    rlcore::detail::logits_status status;
    status.nonfinite_logits.slot = static_cast<index_t>(flags[flag_nonfinite]);
    logits_options options;
    options.nonfinite_logits = policy;
    rlcore::detail::throw_on_issues(function, status, vocab, true, options);
  }
}

template <class Id>
struct device_id_reader {
  const Id* ids;
  cudaStream_t stream;
  long long operator()(index_t r) const {
    Id id{};
    RLCORE_CUDA_CHECK(cudaMemcpyAsync(&id, ids + r, sizeof(Id), cudaMemcpyDeviceToHost, stream));
    RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
    return static_cast<long long>(id);
  }
};

} // namespace detail

/// Temporary storage of token_log_probs: the device-side flags (first bad id row, first row with
/// a non-finite logit).
inline constexpr std::size_t token_log_probs_temp_bytes =
    detail::logits_flag_count * sizeof(unsigned long long);

/// Token log-probs (and entropy) of M logits rows, CUB-style two-phase call.
///   d_temp, temp_bytes  nullptr: sets temp_bytes and returns; else temp_bytes >= that
///   logits              device M x V (bf16, fp16 or fp32; col_stride 1)
///   d_ids               M token ids (integers); ids outside [0, V) give lp = H = 0 and are
///                       recorded for check_token_log_probs / check_token_ids
///   d_mask              M entries or nullptr; rows with mask 0 give 0 and are never read
///   d_log_probs         M floats out; d_entropy: M floats out or nullptr
///   temperature         tau > 0 (x = z / tau)
/// Rows with a NaN or inf logit are computed with the exact formulas (-inf logits have
/// probability 0; NaN and +inf give NaN: nonfinite_logits_policy::propagate) and recorded for
/// check_token_log_probs, which throws under nonfinite_logits_policy::error.
/// Accuracy: fp32 accumulation with exp2_fast (math/exp2_fast.hpp); measured against a double
/// reference in tests/cuda/test_logits.cu. Asynchronous on `stream`.
template <class T, class Id, class Mask = unsigned char>
void token_log_probs(void* d_temp, std::size_t& temp_bytes,
                     matrix_view<const T, device_space> logits, const Id* d_ids,
                     const std::type_identity_t<Mask>* d_mask, float* d_log_probs, float* d_entropy,
                     double temperature, cudaStream_t stream) {
  static_assert(detail::is_logit_type<T>, "rlcore::cuda::token_log_probs: bf16, fp16 or fp32");
  static_assert(std::is_integral_v<Id>, "rlcore::cuda::token_log_probs: integer token ids");
  constexpr const char* function = "token_log_probs";
  if (d_temp == nullptr) {
    temp_bytes = token_log_probs_temp_bytes;
    return;
  }
  rlcore::detail::require(temp_bytes >= token_log_probs_temp_bytes, function, "temp_bytes",
                          "expected at least ", token_log_probs_temp_bytes, ", got ", temp_bytes);
  detail::check_logits_view(function, "logits", logits, logits.rows);
  const float inv = detail::checked_inverse_temperature(function, temperature);
  auto* flags = static_cast<unsigned long long*>(d_temp);
  RLCORE_CUDA_CHECK(cudaMemsetAsync(flags, 0xFF, token_log_probs_temp_bytes, stream));
  if (logits.rows == 0) {
    return;
  }
  const auto launch = [&](auto kernel) {
    kernel<<<detail::row_grid(logits.rows), detail::logits_threads, 0, stream>>>(
        logits.data, logits.rows, logits.cols, logits.row_stride, d_ids, d_mask, d_log_probs,
        d_entropy, inv, flags);
  };
  if (inv == 1.0f) {
    launch(detail::token_log_probs_kernel<true, T, Id, Mask>);
  } else {
    launch(detail::token_log_probs_kernel<false, T, Id, Mask>);
  }
  RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::token_log_probs_kernel");
}

/// Waits for `stream` and throws rlcore::invalid_argument naming 'token_ids' if the
/// token_log_probs call that used `d_temp` saw an id outside [0, V) (non-finite logits are not
/// checked: see check_token_log_probs).
template <class Id>
void check_token_ids(const void* d_temp, const Id* d_ids, index_t vocab, cudaStream_t stream) {
  auto flags = detail::read_logits_flags(static_cast<const unsigned long long*>(d_temp), stream);
  detail::report_logits_flags("token_log_probs", flags, vocab, nonfinite_logits_policy::propagate,
                              detail::device_id_reader<Id>{d_ids, stream});
}

/// Waits for `stream` and throws rlcore::invalid_argument for the token_log_probs call that used
/// `d_temp`: naming 'token_ids' for an id outside [0, V) (first), then, when `policy` is
/// nonfinite_logits_policy::error, naming 'logits' and the first valid row with a NaN or inf.
template <class Id>
void check_token_log_probs(const void* d_temp, const Id* d_ids, index_t vocab,
                           nonfinite_logits_policy policy, cudaStream_t stream) {
  auto flags = detail::read_logits_flags(static_cast<const unsigned long long*>(d_temp), stream);
  detail::report_logits_flags("token_log_probs", flags, vocab, policy,
                              detail::device_id_reader<Id>{d_ids, stream});
}

/// Token log-probs (and entropy) with temporary memory from ctx.resource; waits and throws
/// rlcore::invalid_argument for ids outside [0, V) and, under options.nonfinite_logits == error
/// (the default), for NaN / inf logits in valid rows. options.temperature: tau;
/// options.accumulate_gradient is not used. Other arguments as the two-phase call.
template <class T, class Id, class Mask = unsigned char>
void token_log_probs(matrix_view<const T, device_space> logits, const Id* d_ids,
                     const std::type_identity_t<Mask>* d_mask, float* d_log_probs, float* d_entropy,
                     const logits_options& options, const device_context& ctx = {}) {
  std::size_t bytes = 0;
  token_log_probs<T, Id, Mask>(nullptr, bytes, logits, d_ids, d_mask, d_log_probs, d_entropy,
                               options.temperature, ctx.stream);
  auto temp = ctx.allocate<unsigned char>(static_cast<index_t>(bytes));
  token_log_probs<T, Id, Mask>(temp.data(), bytes, logits, d_ids, d_mask, d_log_probs, d_entropy,
                               options.temperature, ctx.stream);
  check_token_log_probs(temp.data(), d_ids, logits.cols, options.nonfinite_logits, ctx.stream);
}

/// The same with logits_options{temperature} (non-finite logits are an error).
template <class T, class Id, class Mask = unsigned char>
void token_log_probs(matrix_view<const T, device_space> logits, const Id* d_ids,
                     const std::type_identity_t<Mask>* d_mask, float* d_log_probs, float* d_entropy,
                     double temperature = 1.0, const device_context& ctx = {}) {
  logits_options options;
  options.temperature = temperature;
  token_log_probs<T, Id, Mask>(logits, d_ids, d_mask, d_log_probs, d_entropy, options, ctx);
}

namespace detail {

/// policy_row_stats holding only the valid count (the normaliser of seq_mean_token_mean).
template <class Layout>
struct valid_row_count {
  Layout layout;
  RLCORE_HD rlcore::detail::policy_row_stats operator()(index_t i, index_t t) const {
    rlcore::detail::policy_row_stats s;
    s.valid = layout.valid(i, t) ? 1.0 : 0.0;
    return s;
  }
};

/// A per-token view holding one value (a token input staged in a register): every (i, t) reads it.
struct staged_value_view {
  float value;
  RLCORE_HD float operator()(index_t, index_t) const { return value; }
};

/// A per-token view onto one float the token pass writes (d loss / d lp): every (i, t) is it.
struct gradient_slot_view {
  float* slot;
  RLCORE_HD float& operator()(index_t, index_t) const { return *slot; }
};

/// The layout of a token pass evaluated only for a token already known to be valid.
struct all_valid_tokens {
  __device__ bool valid(index_t, index_t) const { return true; }
};

/// Builds, in the kernel, the generic token pass over the block's shared lp / gradient slots.
template <class Layout, class Old, class Adv, class Ref>
struct make_policy_token_pass {
  Layout layout;
  Old old_log_probs;
  Adv advantages;
  Ref ref_log_probs;
  rlcore::detail::policy_params<float> params;
  const rlcore::detail::policy_row_stats* rows;

  __device__ auto operator()(shared_scalar_view lp, shared_scalar_view grad) const {
    using rlcore::detail::absent_token_view;
    using views = rlcore::detail::policy_views<shared_scalar_view, Old, Adv, Ref, absent_token_view,
                                               absent_token_view>;
    return rlcore::detail::policy_token_pass<float, Layout, views, shared_scalar_view,
                                             absent_token_view>{
        layout, views{lp, old_log_probs, advantages, ref_log_probs, {}, {}}, grad, {}, params,
        rows};
  }

  /// The inputs the pass reads for valid token (i, t) besides lp: old, A, ref and the token weight
  /// w = params.weights.row_weight(n_i) (the pass's own formula). stage(i, t) only issues the
  /// loads (weight holds n_i), so that the thread that staged them does not wait for them; weigh()
  /// turns n_i into w once they have arrived. The cluster kernel stages them at its start and
  /// weighs them while it waits for the other CTAs' statistics.
  struct staged_inputs {
    float old_log_prob = 0.0f;
    float advantage = 0.0f;
    float ref_log_prob = 0.0f;
    double weight = 0.0; ///< n_i after stage, w after weigh
  };

  __device__ staged_inputs stage(index_t i, index_t t) const {
    return {static_cast<float>(old_log_probs(i, t)), static_cast<float>(advantages(i, t)),
            static_cast<float>(ref_log_probs(i, t)), rows != nullptr ? rows[i].valid : 0.0};
  }

  __device__ void weigh(staged_inputs& in) const {
    in.weight = params.weights.row_weight(in.weight);
  }

  /// The same pass over staged inputs and lp, for a valid token, writing d loss / d lp to *grad:
  /// the same values and bits as operator()(lp, grad) (the weight enters as a scale with no row
  /// division).
  __device__ auto operator()(const staged_inputs& in, float lp, float* grad) const {
    using rlcore::detail::absent_token_view;
    using views =
        rlcore::detail::policy_views<staged_value_view, staged_value_view, staged_value_view,
                                     staged_value_view, absent_token_view, absent_token_view>;
    rlcore::detail::policy_params<float> staged_params = params;
    staged_params.weights = aggregation_weights{in.weight, false};
    return rlcore::detail::policy_token_pass<float, all_valid_tokens, views, gradient_slot_view,
                                             absent_token_view>{
        all_valid_tokens{},
        views{{lp}, {in.old_log_prob}, {in.advantage}, {in.ref_log_prob}, {}, {}},
        gradient_slot_view{grad},
        {},
        staged_params,
        nullptr};
  }
};

/// Shared memory per CTA that the automatic cluster size aims for: the smallest cluster whose
/// slices fit. Measured on the H200 for bf16 V = 152,064 (bench_logits.cuh, docs/benchmarks.md):
/// 4 CTAs of 74 KB (2 per SM) beat 2, 3, 5, 6 and 8 CTAs.
inline constexpr std::size_t cluster_slice_target_bytes = 80 * 1024;
inline constexpr int max_cluster_size = max_cluster_ranks; ///< the portable maximum, 8

/// How the cluster kernel covers a row: `size` CTAs (0: the cluster kernel cannot run), each
/// holding slice_vectors 16-byte vectors in shared_bytes of dynamic shared memory.
struct cluster_plan {
  int size = 0;
  index_t slice_vectors = 0;
  std::size_t shared_bytes = 0;
};

/// The launch shape of `clusters` clusters of `plan` on `stream`.
inline kernel_launch cluster_kernel_launch(const cluster_plan& plan, index_t clusters,
                                           cudaStream_t stream) {
  kernel_launch l{};
  l.grid = static_cast<unsigned>(clusters * plan.size);
  l.threads = cluster_logits_threads;
  l.shared_bytes = plan.shared_bytes;
  l.stream = stream;
  l.cluster = static_cast<unsigned>(plan.size);
  return l;
}

/// Whether every row of `m` starts on a 16-byte boundary (start and row stride in bytes).
template <class T>
bool rows_16_byte_aligned(const matrix_view<T, device_space>& m) {
  return reinterpret_cast<std::uintptr_t>(m.data) % sizeof(uint4) == 0
         && (m.row_stride * static_cast<index_t>(sizeof(T))) % static_cast<index_t>(sizeof(uint4))
                == 0;
}

/// The cluster plan for `kernel` (a fused_logits_cluster_kernel instantiation) on the current
/// device. requested: 0 chooses (the smallest power of two <= 8 whose slice fits
/// cluster_slice_target_bytes, else 8 if its slice fits the opt-in shared memory), -1 none, else
/// that size. Needs sm_90 machine code for the kernel, cluster launch support, element-aligned
/// rows of logits and gradient whose starts have the same offset from a 16-byte boundary in every
/// row (in place, or equal start residues and row strides differing by a multiple of 16 bytes;
/// the caller launches the AnyStart kernel unless the rows are 16-byte aligned), a grid of
/// rows x size CTAs, and at least one resident cluster.
template <class T, class Kernel>
cluster_plan plan_cluster(Kernel* kernel, const matrix_view<const T, device_space>& logits,
                          const matrix_view<T, device_space>& grad, int requested) {
  constexpr auto vector_bytes = static_cast<std::uintptr_t>(sizeof(uint4));
  constexpr auto element_bytes = static_cast<std::uintptr_t>(sizeof(T));
  const auto logits_start = reinterpret_cast<std::uintptr_t>(logits.data);
  const auto grad_start = reinterpret_cast<std::uintptr_t>(grad.data);
  const auto stride_difference = static_cast<std::uintptr_t>((logits.row_stride - grad.row_stride)
                                                             * static_cast<index_t>(sizeof(T)));
  const bool same_misalignment = logits_start % element_bytes == 0
                                 && grad_start % element_bytes == 0
                                 && logits_start % vector_bytes == grad_start % vector_bytes
                                 && (logits.rows <= 1 || stride_difference % vector_bytes == 0);
  if (requested < 0 || requested > max_cluster_size || !same_misalignment) {
    return {};
  }
  int device = 0;
  int cluster_launch = 0;
  int shared_optin = 0;
  RLCORE_CUDA_CHECK(cudaGetDevice(&device));
  RLCORE_CUDA_CHECK(cudaDeviceGetAttribute(&cluster_launch, cudaDevAttrClusterLaunch, device));
  RLCORE_CUDA_CHECK(
      cudaDeviceGetAttribute(&shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes attributes{};
  RLCORE_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  if (cluster_launch == 0 || attributes.binaryVersion < 90) {
    return {};
  }
  const index_t vectors = logits.cols / vector_width<T>;
  const auto slice_bytes = [&](int size) {
    return static_cast<std::size_t>((vectors + size - 1) / size) * sizeof(uint4);
  };
  const std::size_t shared_limit =
      static_cast<std::size_t>(shared_optin) - attributes.sharedSizeBytes;
  int size = requested;
  if (size == 0) {
    size = 1;
    while (size < max_cluster_size && slice_bytes(size) > cluster_slice_target_bytes) {
      size *= 2;
    }
  }
  const index_t slice_vectors = (vectors + size - 1) / size;
  if (slice_bytes(size) > shared_limit || slice_vectors > cluster_max_chunks * cluster_chunk_vectors
      || static_cast<long long>(logits.rows) * size > 0x7FFFFFFFLL) {
    return {};
  }
  cluster_plan plan{size, slice_vectors, slice_bytes(size)};
  RLCORE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(plan.shared_bytes)));
  cudaLaunchAttribute launch_attributes[2]{};
  const cudaLaunchConfig_t config =
      launch_config(cluster_kernel_launch(plan, 1, nullptr), launch_attributes);
  int clusters = 0;
  RLCORE_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  return clusters > 0 ? plan : cluster_plan{};
}

/// The temporary storage of the fused logits path, carved from one buffer (d_temp; every part
/// 16-byte aligned): the reduced metric sums (1), the logits flags (logits_flag_count), the
/// per-slot sums (slots), the row statistics (rows) and the sums reduction's partials. With a null
/// base the pointers are null and `bytes` is the size.
struct fused_logits_temp {
  rlcore::detail::policy_token_sums* total = nullptr;
  unsigned long long* flags = nullptr;
  rlcore::detail::policy_token_sums* sums = nullptr;
  rlcore::detail::policy_row_stats* rows = nullptr;
  rlcore::detail::policy_token_sums* partials = nullptr;
  std::size_t bytes = 0;
};

inline fused_logits_temp fused_logits_temp_layout(void* base, index_t slots, index_t rows) {
  using rlcore::detail::policy_row_stats;
  using rlcore::detail::policy_token_sums;
  auto* bytes = static_cast<unsigned char*>(base);
  fused_logits_temp t;
  const auto take = [&](std::size_t size) {
    unsigned char* at = bytes != nullptr ? bytes + t.bytes : nullptr;
    t.bytes += (size + 15) / 16 * 16;
    return at;
  };
  const auto count = [](index_t n) { return static_cast<std::size_t>(n > 0 ? n : 0); };
  t.total = reinterpret_cast<policy_token_sums*>(take(sizeof(policy_token_sums)));
  t.flags =
      reinterpret_cast<unsigned long long*>(take(logits_flag_count * sizeof(unsigned long long)));
  t.sums = reinterpret_cast<policy_token_sums*>(take(count(slots) * sizeof(policy_token_sums)));
  t.rows = reinterpret_cast<policy_row_stats*>(take(count(rows) * sizeof(policy_row_stats)));
  t.partials = reinterpret_cast<policy_token_sums*>(
      take(count(device_context::reduce_partials(slots)) * sizeof(policy_token_sums)));
  return t;
}

/// Validates and enqueues the fused logits path on ctx.stream into d_temp
/// (fused_logits_temp_layout; at least its bytes): the row pre-pass, the kernel and the
/// reduction of the per-slot sums into d_temp's total. Waits only when the aggregation needs the
/// local valid-token count (token_mean without global_tokens). cluster_size 0 chooses, -1 forces
/// the two-pass kernel, 1 to 8 forces that cluster size when possible (tests, benchmarks).
template <batch_layout Layout, class T, class Ids, class Old, class Adv, class Ref>
requires std::same_as<typename Layout::space, device_space>
void enqueue_fused_logits(void* d_temp, const Layout& layout,
                          matrix_view<const T, device_space> logits, const Ids& token_ids,
                          const Old& old_log_probs, const Adv& advantages, const Ref& ref_log_probs,
                          matrix_view<T, device_space> grad_logits_out,
                          const policy_options& options, const logits_options& logits_opts,
                          const device_context& ctx, float* log_probs_out, int cluster_size) {
  static_assert(is_logit_type<T>,
                "rlcore::cuda::policy_loss_from_logits: bf16, fp16 or fp32 logits");
  constexpr const char* function = "policy_loss_from_logits";
  const double temperature = logits_opts.temperature;
  rlcore::detail::require(!logits_opts.accumulate_gradient, function,
                          "logits_opts.accumulate_gradient",
                          "expected false (the fused kernel writes d logits once), got true");
  using rlcore::detail::policy_token_sums;
  const index_t slots = layout.token_slots();
  check_logits_view(function, "logits", logits, slots);
  check_logits_view(function, "grad_logits_out", grad_logits_out, slots);
  rlcore::detail::require(grad_logits_out.cols == logits.cols, function, "grad_logits_out",
                          "expected ", logits.cols, " columns like the logits, got ",
                          grad_logits_out.cols);
  const auto ids = layout.bind(function, "token_ids", token_ids);
  const auto old = layout.bind(function, "old_log_probs", old_log_probs);
  const auto ref = layout.bind(function, "ref_log_probs", ref_log_probs);
  const auto adv = layout.bind(function, "advantages", advantages);
  const float inv = checked_inverse_temperature(function, temperature);
  rlcore::detail::require(options.entropy_coef == 0.0, function, "options.entropy_coef",
                          "expected 0: the fused logits kernel has no entropy bonus (use "
                          "rlcore::policy_loss_from_logits on a device context), got ",
                          options.entropy_coef);
  rlcore::detail::require(options.entropy_top_fraction == 1.0, function,
                          "options.entropy_top_fraction",
                          "expected 1: the fused logits kernel has no entropy masking (use "
                          "rlcore::policy_loss_from_logits on a device context), got ",
                          options.entropy_top_fraction);
  rlcore::detail::validate_policy_options(function, options, true, false, false, false,
                                          layout.rows());
  const bool supported =
      (options.loss == policy_loss::clipped || options.loss == policy_loss::sapo
       || options.loss == policy_loss::cispo || options.loss == policy_loss::reinforce);
  rlcore::detail::require(supported, function, "options.loss",
                          "expected a per-token loss (clipped, sapo, cispo, reinforce) for the "
                          "fused logits kernel, got ",
                          static_cast<int>(options.loss));
  rlcore::detail::require(options.importance.level == importance_level::none, function,
                          "options.importance.level",
                          "expected none (no rollout log-probs in the fused logits kernel), got ",
                          static_cast<int>(options.importance.level));
  auto p = rlcore::detail::make_policy_params<float>(options);
  p.weights = rlcore::detail::prepare_aggregation(function, options.aggregation, layout, ctx);
  p.row_stats_needed = p.weights.divide_by_row_count;
  const fused_logits_temp temp = fused_logits_temp_layout(d_temp, slots, layout.rows());
  if (p.row_stats_needed) {
    ctx.reduce_rows(layout, temp.rows, valid_row_count<Layout>{layout});
  }
  RLCORE_CUDA_CHECK(cudaMemsetAsync(temp.flags, 0xFF,
                                    logits_flag_count * sizeof(unsigned long long), ctx.stream));
  using maker = make_policy_token_pass<Layout, decltype(old), decltype(adv), decltype(ref)>;
  using sums_type = policy_token_sums;
  if (slots > 0) {
    const maker make{layout, old, adv, ref, p, p.row_stats_needed ? temp.rows : nullptr};
    const auto launch_cluster = [&](auto kernel) {
      const cluster_plan plan = plan_cluster<T>(kernel, logits, grad_logits_out, cluster_size);
      if (plan.size == 0) {
        return false;
      }
      launch_kernel(kernel, cluster_kernel_launch(plan, slots, ctx.stream), layout, logits.data,
                    logits.cols, logits.row_stride, grad_logits_out.data,
                    grad_logits_out.row_stride, ids, make, inv, log_probs_out, temp.sums,
                    temp.flags, plan.slice_vectors);
      RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::fused_logits_cluster_kernel");
      return true;
    };
    const auto launch_two_pass = [&](auto kernel) {
      kernel<<<row_grid(slots), fused_logits_threads, 0, ctx.stream>>>(
          layout, logits.data, logits.cols, logits.row_stride, grad_logits_out.data,
          grad_logits_out.row_stride, ids, make, inv, log_probs_out, temp.sums, temp.flags);
      RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::fused_logits_objective_kernel");
    };
    using id_type = decltype(ids);
    // 16-byte aligned rows take the cluster kernel without head handling (AnyStart false).
    const bool aligned = rows_16_byte_aligned(logits) && rows_16_byte_aligned(grad_logits_out);
    const auto launch = [&](auto unit_temperature) {
      constexpr bool unit = decltype(unit_temperature)::value;
      const bool clustered =
          aligned
              ? launch_cluster(
                  fused_logits_cluster_kernel<unit, false, T, id_type, Layout, maker, sums_type>)
              : launch_cluster(
                  fused_logits_cluster_kernel<unit, true, T, id_type, Layout, maker, sums_type>);
      if (!clustered) {
        launch_two_pass(fused_logits_objective_kernel<unit, T, id_type, Layout, maker, sums_type>);
      }
    };
    if (inv == 1.0f) {
      launch(std::true_type{});
    } else {
      launch(std::false_type{});
    }
  }
  ctx.reduce_into(slots, temp.sums, temp.partials, temp.total);
}

/// Waits for the fused logits path enqueued into d_temp and returns its loss and metrics; throws
/// rlcore::invalid_argument for a token id outside [0, V) or (policy error) a NaN / inf logit,
/// as the synchronous form does. ids: the token ids bound to the layout.
template <class Layout, class Ids>
objective_result finish_fused_logits(const char* function, const void* d_temp, const Layout& layout,
                                     const Ids& ids, index_t vocab, const policy_options& options,
                                     const logits_options& logits_opts, const device_context& ctx) {
  using rlcore::detail::policy_token_sums;
  const fused_logits_temp temp =
      fused_logits_temp_layout(const_cast<void*>(d_temp), layout.token_slots(), layout.rows());
  policy_token_sums sums{};
  ctx.copy_to_host(temp.total, 1, &sums);
  policy_token_sums total{}; // the synchronous reduce's init + sum
  total += sums;
  report_logits_flags(function, read_logits_flags(temp.flags, ctx.stream), vocab,
                      logits_opts.nonfinite_logits, [&](index_t r) {
                        auto value = ctx.allocate<long long>(1);
                        read_token_id_kernel<<<1, 1, 0, ctx.stream>>>(layout, ids, r, value.data());
                        RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::read_token_id_kernel");
                        long long id = 0;
                        ctx.copy_to_host(value.data(), 1, &id);
                        return id;
                      });
  rlcore::detail::check_global_tokens(function, options.aggregation, total.valid);
  return rlcore::detail::finish_policy_metrics(total, false);
}

/// policy_loss_from_logits with the kernel choice exposed (tests, benchmarks): cluster_size as
/// enqueue_fused_logits. Temporary storage from ctx; waits.
template <batch_layout Layout, class T, class Ids, class Old, class Adv, class Ref>
requires std::same_as<typename Layout::space, device_space> objective_result
fused_policy_loss_from_logits(const Layout& layout, matrix_view<const T, device_space> logits,
                              const Ids& token_ids, const Old& old_log_probs, const Adv& advantages,
                              const Ref& ref_log_probs,
                              matrix_view<T, device_space> grad_logits_out,
                              const policy_options& options, const logits_options& logits_opts,
                              const device_context& ctx, float* log_probs_out, int cluster_size) {
  constexpr const char* function = "policy_loss_from_logits";
  const std::size_t bytes =
      fused_logits_temp_layout(nullptr, layout.token_slots(), layout.rows()).bytes;
  auto temp = ctx.allocate<unsigned char>(static_cast<index_t>(bytes));
  enqueue_fused_logits(temp.data(), layout, logits, token_ids, old_log_probs, advantages,
                       ref_log_probs, grad_logits_out, options, logits_opts, ctx, log_probs_out,
                       cluster_size);
  return finish_fused_logits(function, temp.data(), layout,
                             layout.bind(function, "token_ids", token_ids), logits.cols, options,
                             logits_opts, ctx);
}

} // namespace detail

/// Fused policy objective from logits, forward and backward in one kernel, on device tensors
/// (the contract of rlcore::policy_loss_from_logits, objective/logits_policy.hpp, for the
/// options listed below):
///   loss = the policy objective of objective/policy.hpp with lp = log softmax(z / tau)[id]
///   grad_logits_out[r, :] = (d loss / d lp_r) * (onehot(id_r) - p_r) / tau; 0 at masked slots
///   layout           device padded (N x T; slot i * T + t) or packed (slot offsets[i] + t)
///   logits           device M x V (M = token slots; bf16, fp16 or fp32, col_stride 1)
///   token_ids, old_log_probs, advantages, ref_log_probs   per-token tensors of the layout
///   grad_logits_out  device M x V of the logits' type; may be `logits` itself (in place)
///   options          policy_options; supported: loss clipped / sapo / cispo / reinforce, any KL
///                    estimator and output clamp, token-level importance weights off, no entropy
///                    bonus or masking, every aggregation mode (others: rlcore::invalid_argument)
///   logits_opts      temperature tau > 0 (default 1); accumulate_gradient must be false;
///                    nonfinite_logits: error (default) throws rlcore::invalid_argument naming
///                    `logits` and the first valid row with a NaN / inf (the outputs are then
///                    unspecified); propagate computes such rows with the exact formulas (-inf
///                    logits have probability 0, NaN / +inf give NaN)
///   log_probs_out    device M floats (lp per token slot) or nullptr
/// Returns the loss and metrics (waits). Extra device memory O(M). On sm_90 with rows that fit a
/// cluster's shared memory (up to 8 x 227 KB) and a gradient row at the logits row's offset from a
/// 16-byte boundary (in place, or the same residue of start and row stride in bytes: any V when
/// both are M x V allocations), one cluster per token slot reads the row from HBM once; otherwise
/// a two-pass kernel (second read from L2).
template <batch_layout Layout, class T, class Ids, class Old, class Adv, class Ref>
requires std::same_as<typename Layout::space, device_space> objective_result
policy_loss_from_logits(const Layout& layout, matrix_view<const T, device_space> logits,
                        const Ids& token_ids, const Old& old_log_probs, const Adv& advantages,
                        const Ref& ref_log_probs, matrix_view<T, device_space> grad_logits_out,
                        const policy_options& options = {}, const logits_options& logits_opts = {},
                        const device_context& ctx = {}, float* log_probs_out = nullptr) {
  return detail::fused_policy_loss_from_logits(layout, logits, token_ids, old_log_probs, advantages,
                                               ref_log_probs, grad_logits_out, options, logits_opts,
                                               ctx, log_probs_out, 0);
}

/// CUB-style two-phase form of policy_loss_from_logits (the same contract, options and limits):
/// with d_temp == nullptr sets temp_bytes (O(M + N) bytes: the per-slot metric sums, the row
/// statistics, the flags) and returns; otherwise (d_temp 16-byte aligned, temp_bytes at least
/// that) validates the arguments, enqueues the whole path on ctx.stream and returns without
/// waiting (except for token_mean without global_tokens, which needs the valid-token count
/// first). Read the loss, the metrics and the errors the kernels found (ids outside [0, V), NaN /
/// inf logits) with finish_policy_loss_from_logits on the same d_temp and arguments; d_temp must
/// stay untouched until then. Several calls may be enqueued back to back on one d_temp when only
/// the last one's result is read.
template <batch_layout Layout, class T, class Ids, class Old, class Adv, class Ref>
requires std::same_as<typename Layout::space, device_space>
void policy_loss_from_logits(void* d_temp, std::size_t& temp_bytes, const Layout& layout,
                             matrix_view<const T, device_space> logits, const Ids& token_ids,
                             const Old& old_log_probs, const Adv& advantages,
                             const Ref& ref_log_probs, matrix_view<T, device_space> grad_logits_out,
                             const policy_options& options = {},
                             const logits_options& logits_opts = {}, const device_context& ctx = {},
                             float* log_probs_out = nullptr) {
  constexpr const char* function = "policy_loss_from_logits";
  const std::size_t needed =
      detail::fused_logits_temp_layout(nullptr, layout.token_slots(), layout.rows()).bytes;
  if (d_temp == nullptr) {
    temp_bytes = needed;
    return;
  }
  rlcore::detail::require(temp_bytes >= needed, function, "temp_bytes", "expected at least ",
                          needed, ", got ", temp_bytes);
  rlcore::detail::require(reinterpret_cast<std::uintptr_t>(d_temp) % 16 == 0, function, "d_temp",
                          "expected a 16-byte aligned pointer");
  detail::enqueue_fused_logits(d_temp, layout, logits, token_ids, old_log_probs, advantages,
                               ref_log_probs, grad_logits_out, options, logits_opts, ctx,
                               log_probs_out, 0);
}

/// Waits for the two-phase policy_loss_from_logits that used d_temp (with this layout, these
/// token_ids, V = logits.cols, options and logits_opts) and returns its loss and metrics; throws
/// rlcore::invalid_argument as the one-call form does (ids outside [0, V); NaN / inf logits under
/// the error policy; token_mean's global_tokens below the valid count).
template <batch_layout Layout, class Ids>
requires std::same_as<typename Layout::space, device_space>
    objective_result finish_policy_loss_from_logits(const void* d_temp, const Layout& layout,
                                                    const Ids& token_ids, index_t vocab,
                                                    const policy_options& options = {},
                                                    const logits_options& logits_opts = {},
                                                    const device_context& ctx = {}) {
  constexpr const char* function = "policy_loss_from_logits";
  return detail::finish_fused_logits(function, d_temp, layout,
                                     layout.bind(function, "token_ids", token_ids), vocab, options,
                                     logits_opts, ctx);
}

/// The GRPO loss (DeepSeekMath eq. 3, negated) from logits, fused forward + backward: the
/// contract of rlcore::grpo_loss_from_logits (objective/logits_policy.hpp; defaults eps 0.2,
/// beta 0.04, k3, seq-mean-token-mean, tau 1) with policy_loss_from_logits' kernel and limits.
template <batch_layout Layout, class T, class Ids, class Old, class Ref, class Adv>
requires std::same_as<typename Layout::space, device_space> objective_result
grpo_loss_from_logits(const Layout& layout, matrix_view<const T, device_space> logits,
                      const Ids& token_ids, const Old& old_log_probs, const Ref& ref_log_probs,
                      const Adv& advantages, matrix_view<T, device_space> grad_logits_out,
                      const grpo_options& options = {}, const logits_options& logits_opts = {},
                      const device_context& ctx = {}, float* log_probs_out = nullptr) {
  return cuda::policy_loss_from_logits(layout, logits, token_ids, old_log_probs, advantages,
                                       ref_log_probs, grad_logits_out, options.as_policy_options(),
                                       logits_opts, ctx, log_probs_out);
}

} // namespace rlcore::cuda

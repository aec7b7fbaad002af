// Token log-probs and entropy from logits on the GPU, and the fused GRPO objective from logits.
//
// Shape legend: M token slots (logits rows), V vocabulary; logits are bf16 (__nv_bfloat16), fp16
// (__half) or fp32, contiguous along V (col_stride 1) with any row stride; every statistic is
// accumulated in fp32 with the formulas of math/softmax.hpp. One block per row, 16-byte loads,
// exact for any V (kernels/logits_kernels.cuh).
//
//   token_log_probs(d_temp, temp_bytes, logits, ids, mask, lp_out, entropy_out, temperature, s)
//       lp[r] = x[r, id_r] - logsumexp(x[r, :]), H[r] = -sum_v p_v log p_v, x = z / tau.
//       CUB-style: d_temp == nullptr sets temp_bytes and returns; otherwise asynchronous on s.
//       check_token_ids(d_temp, s) then waits and throws for ids outside [0, V).
//   token_log_probs(logits, ids, mask, lp_out, entropy_out, temperature, ctx)
//       the same, allocating through ctx.resource, and checking the ids (waits).
//   policy_loss_from_logits(layout, logits, token_ids, old, advantages, ref, grad_logits_out,
//                           options, logits_opts, ctx [, lp_out])
//   grpo_loss_from_logits(layout, logits, token_ids, old, ref, advantages, grad_logits_out,
//                         grpo_options, logits_opts, ctx [, lp_out])
//       the policy objective of objective/policy.hpp with lp taken from the logits, forward and
//       backward in one kernel: d loss / d logits = g_lp (onehot(id) - p) / tau written once (may
//       be the logits themselves: in place), O(M) extra memory.
#pragma once

#include "../../objective/aggregate.hpp"
#include "../../objective/detail/policy_pass.hpp"
#include "../../objective/grpo.hpp"
#include "../../objective/logits_common.hpp"
#include "../../objective/metrics.hpp"
#include "../../objective/policy.hpp"
#include "execution.cuh"
#include "kernels/logits_kernels.cuh"
#include "kernels/validation_kernels.cuh"

#include <cstddef>
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

/// Reads the bad-id flag (waits for `stream`) and throws naming `argument` if it is set.
template <class IdAt>
void report_bad_token_id(const char* function, const unsigned long long* d_flag,
                         cudaStream_t stream, index_t vocab, const IdAt& id_at) {
  unsigned long long first_bad = 0;
  RLCORE_CUDA_CHECK(
      cudaMemcpyAsync(&first_bad, d_flag, sizeof(first_bad), cudaMemcpyDeviceToHost, stream));
  RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (first_bad != no_violation) {
    const auto r = static_cast<index_t>(first_bad);
    rlcore::detail::throw_invalid(function, "token_ids", "expected ids in [0, V = ", vocab,
                                  "), got ", id_at(r), " at logits row ", r);
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

/// Temporary storage of token_log_probs: the device-side id check flag.
inline constexpr std::size_t token_log_probs_temp_bytes = sizeof(unsigned long long);

/// Token log-probs (and entropy) of M logits rows, CUB-style two-phase call.
///   d_temp, temp_bytes  nullptr: sets temp_bytes and returns; else temp_bytes >= that
///   logits              device M x V (bf16, fp16 or fp32; col_stride 1)
///   d_ids               M token ids (integers); ids outside [0, V) give lp = H = 0 and are
///                       recorded for check_token_ids
///   d_mask              M entries or nullptr; rows with mask 0 give 0 and are never read
///   d_log_probs         M floats out; d_entropy: M floats out or nullptr
///   temperature         tau > 0 (x = z / tau)
/// Asynchronous on `stream`.
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
  auto* flag = static_cast<unsigned long long*>(d_temp);
  RLCORE_CUDA_CHECK(cudaMemsetAsync(flag, 0xFF, sizeof(*flag), stream));
  if (logits.rows == 0) {
    return;
  }
  const auto launch = [&](auto kernel) {
    kernel<<<detail::row_grid(logits.rows), detail::logits_threads, 0, stream>>>(
        logits.data, logits.rows, logits.cols, logits.row_stride, d_ids, d_mask, d_log_probs,
        d_entropy, inv, flag);
  };
  if (inv == 1.0f) {
    launch(detail::token_log_probs_kernel<true, T, Id, Mask>);
  } else {
    launch(detail::token_log_probs_kernel<false, T, Id, Mask>);
  }
  RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::token_log_probs_kernel");
}

/// Waits for `stream` and throws rlcore::invalid_argument naming 'token_ids' if the
/// token_log_probs call that used `d_temp` saw an id outside [0, V).
template <class Id>
void check_token_ids(const void* d_temp, const Id* d_ids, index_t vocab, cudaStream_t stream) {
  detail::report_bad_token_id("token_log_probs", static_cast<const unsigned long long*>(d_temp),
                              stream, vocab, detail::device_id_reader<Id>{d_ids, stream});
}

/// Token log-probs (and entropy) with temporary memory from ctx.resource; waits and throws
/// rlcore::invalid_argument for ids outside [0, V). Arguments as the two-phase call.
template <class T, class Id, class Mask = unsigned char>
void token_log_probs(matrix_view<const T, device_space> logits, const Id* d_ids,
                     const std::type_identity_t<Mask>* d_mask, float* d_log_probs, float* d_entropy,
                     double temperature = 1.0, const device_context& ctx = {}) {
  std::size_t bytes = 0;
  token_log_probs<T, Id, Mask>(nullptr, bytes, logits, d_ids, d_mask, d_log_probs, d_entropy,
                               temperature, ctx.stream);
  auto temp = ctx.allocate<unsigned char>(static_cast<index_t>(bytes));
  token_log_probs<T, Id, Mask>(temp.data(), bytes, logits, d_ids, d_mask, d_log_probs, d_entropy,
                               temperature, ctx.stream);
  check_token_ids(temp.data(), d_ids, logits.cols, ctx.stream);
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
};

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
///   logits_opts      temperature tau > 0 (default 1); accumulate_gradient must be false; logits
///                    are not checked for NaN / inf (nonfinite_logits is treated as propagate)
///   log_probs_out    device M floats (lp per token slot) or nullptr
/// Returns the loss and metrics (waits). Extra device memory O(M).
template <batch_layout Layout, class T, class Ids, class Old, class Adv, class Ref>
requires std::same_as<typename Layout::space, device_space> objective_result
policy_loss_from_logits(const Layout& layout, matrix_view<const T, device_space> logits,
                        const Ids& token_ids, const Old& old_log_probs, const Adv& advantages,
                        const Ref& ref_log_probs, matrix_view<T, device_space> grad_logits_out,
                        const policy_options& options = {}, const logits_options& logits_opts = {},
                        const device_context& ctx = {}, float* log_probs_out = nullptr) {
  static_assert(detail::is_logit_type<T>,
                "rlcore::cuda::policy_loss_from_logits: bf16, fp16 or fp32 logits");
  constexpr const char* function = "policy_loss_from_logits";
  const double temperature = logits_opts.temperature;
  rlcore::detail::require(!logits_opts.accumulate_gradient, function,
                          "logits_opts.accumulate_gradient",
                          "expected false (the fused kernel writes d logits once), got true");
  using rlcore::detail::policy_row_stats;
  using rlcore::detail::policy_token_sums;
  const index_t slots = layout.token_slots();
  detail::check_logits_view(function, "logits", logits, slots);
  detail::check_logits_view(function, "grad_logits_out", grad_logits_out, slots);
  rlcore::detail::require(grad_logits_out.cols == logits.cols, function, "grad_logits_out",
                          "expected ", logits.cols, " columns like the logits, got ",
                          grad_logits_out.cols);
  const auto ids = layout.bind(function, "token_ids", token_ids);
  const auto old = layout.bind(function, "old_log_probs", old_log_probs);
  const auto ref = layout.bind(function, "ref_log_probs", ref_log_probs);
  const auto adv = layout.bind(function, "advantages", advantages);
  const float inv = detail::checked_inverse_temperature(function, temperature);
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
  auto rows = ctx.allocate<policy_row_stats>(p.row_stats_needed ? layout.rows() : 0);
  if (p.row_stats_needed) {
    ctx.reduce_rows(layout, rows.data(), detail::valid_row_count<Layout>{layout});
  }
  auto sums = ctx.allocate<policy_token_sums>(slots);
  auto flag = ctx.allocate<unsigned long long>(1);
  RLCORE_CUDA_CHECK(cudaMemsetAsync(flag.data(), 0xFF, sizeof(unsigned long long), ctx.stream));
  using maker = detail::make_policy_token_pass<Layout, decltype(old), decltype(adv), decltype(ref)>;
  if (slots > 0) {
    const maker make{layout, old, adv, ref, p, p.row_stats_needed ? rows.data() : nullptr};
    const auto launch = [&](auto kernel) {
      kernel<<<detail::row_grid(slots), detail::fused_logits_threads, 0, ctx.stream>>>(
          layout, logits.data, logits.cols, logits.row_stride, grad_logits_out.data,
          grad_logits_out.row_stride, ids, make, inv, log_probs_out, sums.data(), flag.data());
    };
    using sums_type = policy_token_sums;
    if (inv == 1.0f) {
      launch(
          detail::fused_logits_objective_kernel<true, T, decltype(ids), Layout, maker, sums_type>);
    } else {
      launch(
          detail::fused_logits_objective_kernel<false, T, decltype(ids), Layout, maker, sums_type>);
    }
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::fused_logits_objective_kernel");
  }
  const policy_token_sums total =
      ctx.reduce(slots, policy_token_sums{}, detail::array_source<policy_token_sums>{sums.data()});
  detail::report_bad_token_id(function, flag.data(), ctx.stream, logits.cols, [&](index_t r) {
    auto value = ctx.allocate<long long>(1);
    detail::read_token_id_kernel<<<1, 1, 0, ctx.stream>>>(layout, ids, r, value.data());
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::read_token_id_kernel");
    long long id = 0;
    ctx.copy_to_host(value.data(), 1, &id);
    return id;
  });
  rlcore::detail::check_global_tokens(function, options.aggregation, total.valid);
  return rlcore::detail::finish_policy_metrics(total, false);
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

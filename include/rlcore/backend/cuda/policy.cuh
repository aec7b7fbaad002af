// The fused policy objective on the GPU: rlcore::cuda::policy_objective and grpo_objective have
// the contract of rlcore::policy_objective / rlcore::grpo_objective (objective/policy.hpp,
// objective/grpo.hpp: same inputs, options, validation, loss, gradient and metrics, computed by
// the same generic per-row and per-token function objects), and run as one pass over the tokens:
// a warp per row sums the row pre-pass (valid count, sequence sums) from HBM and the token pass
// re-reads the row from L1/L2, so each input is read from device memory once and the gradient is
// written once. The per-token clipped surrogate (PPO / GRPO: any KL estimator, no entropy, no
// importance correction) on fp32 padded rows with T % 4 == 0 (T <= 2^20), 16-byte aligned rows
// and one row stride takes the tiled kernel instead (kernels/policy_kernels.cuh: 16-byte loads,
// one slot per chunk of rows summed by a one-block tail kernel launched as a programmatic
// dependent, result independent of the launch shape). The generic rlcore::policy_objective with
// a device context also works (it runs the pre-pass and the token pass as two launches over the
// whole batch); these are the fast paths.
//
// Device memory: every per-token tensor and the layout must be in device memory. The call waits
// for the loss and metrics (host values); the gradient is complete when it returns.
#pragma once

#include "../../objective/grpo.hpp"
#include "../../objective/policy.hpp"
#include "execution.cuh"
#include "kernels/policy_kernels.cuh"
#include "launch.cuh"

#include <cstddef>
#include <type_traits>
#include <utility>

namespace rlcore::cuda {
namespace detail {

/// How tile_chunks_reduce_kernel is launched after the tiled kernel (tests and benchmarks: the
/// result never depends on it).
enum class policy_tail {
  dependent_kernel, ///< the tiled kernel as the programmatic dependent of the stream's previous
                    ///< launch and the tail kernel as the tiled kernel's (sm_90+; plain launches
                    ///< on older devices): each is scheduled while the previous grid ends and
                    ///< waits for it on the device
  kernel,           ///< both launched plainly
};

/// Launch knobs of the tiled kernel (tests and benchmarks): the result never depends on them.
struct policy_launch {
  index_t max_blocks = 0; ///< grid cap of the tiled kernel; 0 = one full wave of the device
  policy_tail tail = policy_tail::dependent_kernel;
};

/// Bytes of temporary storage of the fused objective, the larger of the two kernels' needs:
/// warp-per-row kernel [sums | block partials | row stats], tiled kernel [sums | chunk slots].
inline std::size_t fused_policy_temp_bytes(index_t rows) {
  using rlcore::detail::policy_row_stats;
  using rlcore::detail::policy_token_sums;
  const index_t wanted = (rows + policy_warps_per_block - 1) / policy_warps_per_block;
  const index_t grid = wanted < 1 ? 1 : (wanted < policy_max_blocks ? wanted : policy_max_blocks);
  const std::size_t rows_kernel = static_cast<std::size_t>(grid + 1) * sizeof(policy_token_sums)
                                  + static_cast<std::size_t>(rows) * sizeof(policy_row_stats);
  const std::size_t tiles_kernel =
      sizeof(policy_token_sums)
      + static_cast<std::size_t>(rows > 0 ? policy_chunks(rows) : 0) * sizeof(tile_sums);
  return rows_kernel > tiles_kernel ? rows_kernel : tiles_kernel;
}

/// Device facts the tiled launch needs, read once per call.
struct tile_device {
  int sms = 0;
  int major = 0;
};

inline tile_device current_tile_device() {
  int device = 0;
  tile_device d;
  RLCORE_CUDA_CHECK(cudaGetDevice(&device));
  RLCORE_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device));
  RLCORE_CUDA_CHECK(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device));
  return d;
}

/// Grid of the tiled kernel: one full wave (resident blocks per SM x SMs), at most blocks_wanted.
template <class Kernel>
unsigned policy_tiles_grid(Kernel kernel, int threads, index_t blocks_wanted,
                           const policy_launch& launch, const tile_device& device) {
  index_t cap = launch.max_blocks;
  if (cap <= 0) {
    int per_sm = 0;
    RLCORE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
    cap = static_cast<index_t>(device.sms) * (per_sm < 1 ? 1 : per_sm);
  }
  return static_cast<unsigned>(blocks_wanted < cap ? blocks_wanted : cap);
}

/// The tiled kernel's scratch in the temporary storage whose sums (the result) start at `sums`.
inline tile_scratch make_tile_scratch(rlcore::detail::policy_token_sums* sums, index_t rows) {
  tile_scratch scratch{};
  scratch.result = sums;
  scratch.chunk_rows = policy_chunk_rows(rows);
  scratch.chunks = policy_chunks(rows);
  scratch.chunk_sums = reinterpret_cast<tile_sums*>(sums + 1);
  return scratch;
}

/// Sums the tiled kernel's chunk slots into scratch.result (tile_chunks_reduce_kernel), as a
/// programmatic dependent of the kernel just enqueued when `dependent` (sm_90+).
inline void enqueue_tile_chunks_reduce(const tile_scratch& scratch, bool dependent,
                                       const device_context& ctx) {
  kernel_launch l{};
  l.threads = chunk_reduce_threads;
  l.stream = ctx.stream;
  l.dependent = dependent;
  launch_kernel(tile_chunks_reduce_kernel, l, scratch);
}

/// Runs the tiled kernel (row sums into chunk slots) and the sum of the slots into sums[0], as
/// launch.tail says.
template <class Config, bool HasRef, class Layout, class Views, class Grad>
void enqueue_policy_tiles(const Layout& layout, const Views& views, const Grad& grad,
                          const rlcore::detail::policy_params<float>& p,
                          rlcore::detail::policy_token_sums* sums, const policy_launch& launch,
                          const device_context& ctx) {
  const index_t rows = layout.rows();
  const tile_scratch scratch = make_tile_scratch(sums, rows);
  const tile_device device = current_tile_device();
  const bool dependent = launch.tail == policy_tail::dependent_kernel && device.major >= 9;
  const auto run = [&](auto kernel) {
    const unsigned grid =
        policy_tiles_grid(kernel, Config::threads, scratch.chunks, launch, device);
    kernel_launch l{};
    l.grid = grid;
    l.threads = Config::threads;
    l.stream = ctx.stream;
    l.dependent = dependent;
    launch_kernel(kernel, l, layout, views, grad, p, scratch);
    RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::clipped_policy_tiles_kernel");
    enqueue_tile_chunks_reduce(scratch, dependent, ctx);
  };
  // Plain: no dual clip, no delta clip, no KL output clamp (the PPO / GRPO defaults), folded.
  const bool plain = !(p.dual_clip > 0.0f) && !(p.delta_clip > 0.0f) && !p.kl_output_clamp;
  if constexpr (HasRef) {
    if (p.kl == kl_estimator::k3 && plain) { // the GRPO default: every option select folds
      run(clipped_policy_tiles_kernel<Config, true, true, true, Layout, Views, Grad>);
      return;
    }
  }
  if (plain) {
    run(clipped_policy_tiles_kernel<Config, HasRef, false, true, Layout, Views, Grad>);
  } else {
    run(clipped_policy_tiles_kernel<Config, HasRef, false, false, Layout, Views, Grad>);
  }
}

/// Enqueues the fused pass on ctx.stream; the metric sums land at the start of d_temp.
/// Synchronises only when token_mean needs the local valid-token count (a reduction).
template <class TileConfig = default_tile_config, class Layout, class Views, class Grad,
          class GradEntropy>
void enqueue_fused_policy_objective(const char* function, void* d_temp, const Layout& layout,
                                    const Views& views, const Grad& grad,
                                    const GradEntropy& grad_entropy, const policy_options& o,
                                    const device_context& ctx, const policy_launch& launch = {}) {
  using rlcore::detail::policy_row_pass;
  using rlcore::detail::policy_row_stats;
  using rlcore::detail::policy_token_pass;
  using rlcore::detail::policy_token_sums;
  using T = std::remove_cv_t<std::remove_reference_t<decltype(views.log_probs(0, 0))>>;
  static_assert(real_scalar<T>,
                "rlcore::cuda::policy_objective: log_probs must be float or double");
  auto p = rlcore::detail::make_policy_params<T>(o);
  constexpr bool has_entropy = rlcore::detail::is_present<decltype(views.entropy)>;
  if constexpr (has_entropy) {
    if (p.entropy_mask) {
      p.entropy_threshold = T(rlcore::detail::valid_token_quantile<T>(
          layout, views.entropy, 1.0 - o.entropy_top_fraction, ctx));
    }
  }
  p.weights = rlcore::detail::prepare_aggregation(function, o.aggregation, layout, ctx);
  p.row_stats_needed = p.weights.divide_by_row_count || o.loss == policy_loss::gspo
                       || o.loss == policy_loss::gmpo
                       || o.importance.level == importance_level::sequence;
  const index_t rows = layout.rows();
  auto* sums = static_cast<policy_token_sums*>(d_temp);
  if (rows <= 0) {
    RLCORE_CUDA_CHECK(cudaMemsetAsync(sums, 0, sizeof(policy_token_sums), ctx.stream));
    return;
  }
  const index_t wanted = (rows + policy_warps_per_block - 1) / policy_warps_per_block;
  const auto grid = static_cast<unsigned>(wanted < policy_max_blocks ? wanted : policy_max_blocks);
  policy_token_sums* partials = sums + 1;
  auto* row_stats =
      p.row_stats_needed ? reinterpret_cast<policy_row_stats*>(partials + grid) : nullptr;
  constexpr bool fast_path_types =
      std::is_same_v<T, float> && !has_entropy
      && !rlcore::detail::is_present<
          decltype(views.rollout_log_probs)> && !rlcore::detail::is_present<GradEntropy>;
  if constexpr (fast_path_types) {
    if (o.loss == policy_loss::clipped && o.importance.level == importance_level::none) {
      constexpr bool has_ref = rlcore::detail::is_present<decltype(views.ref_log_probs)>;
      if constexpr (!Layout::is_packed) {
        bool vectorized = mask4_rows(layout) && float4_rows(views.log_probs)
                          && float4_rows(views.old_log_probs) && float4_rows(views.advantages)
                          && float4_rows(grad);
        const index_t stride = views.log_probs.row_stride;
        vectorized = vectorized && layout.cols() <= policy_tiles_max_cols
                     && views.old_log_probs.row_stride == stride
                     && views.advantages.row_stride == stride && grad.row_stride == stride
                     && (layout.mask.data == nullptr || layout.mask.row_stride == stride);
        if constexpr (has_ref) {
          vectorized = vectorized && float4_rows(views.ref_log_probs)
                       && views.ref_log_probs.row_stride == stride;
        }
        if (vectorized) {
          enqueue_policy_tiles<TileConfig, has_ref>(layout, views, grad, p, sums, launch, ctx);
          return;
        }
      }
      clipped_policy_rows_kernel<has_ref>
          <<<grid, block_threads, 0, ctx.stream>>>(layout, views, grad, p, partials);
      RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::clipped_policy_rows_kernel");
      reduce_final_kernel<policy_token_sums>
          <<<1, block_threads, 0, ctx.stream>>>(index_t{grid}, partials, sums);
      RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::reduce_final_kernel (policy)");
      return;
    }
  }
  using row_pass = policy_row_pass<T, Layout, Views>;
  using token_pass = policy_token_pass<T, Layout, Views, Grad, GradEntropy>;
  policy_rows_kernel<policy_row_stats, policy_token_sums><<<grid, block_threads, 0, ctx.stream>>>(
      layout, row_pass{layout, views, p},
      token_pass{layout, views, grad, grad_entropy, p, row_stats}, row_stats, partials);
  RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::policy_rows_kernel");
  reduce_final_kernel<policy_token_sums>
      <<<1, block_threads, 0, ctx.stream>>>(index_t{grid}, partials, sums);
  RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::reduce_final_kernel (policy)");
}

/// Binds and validates the arguments of policy_objective, then calls `run(views, grad,
/// grad_entropy)`.
template <class Layout, class LP, class Old, class Adv, class Ref, class Ent, class Roll,
          class Grad, class GradEntropy, class Run>
void bind_policy_arguments(const char* function, const Layout& layout,
                           const policy_inputs<LP, Old, Adv, Ref, Ent, Roll>& inputs,
                           Grad& grad_log_probs_out, GradEntropy& grad_entropy_out,
                           const policy_options& options, const Run& run) {
  using rlcore::detail::bind_optional;
  using rlcore::detail::is_present;
  auto views = rlcore::detail::policy_views<
      decltype(layout.bind(function, "", inputs.log_probs)),
      decltype(layout.bind(function, "", inputs.old_log_probs)),
      decltype(layout.bind(function, "", inputs.advantages)),
      decltype(bind_optional(layout, function, "", inputs.ref_log_probs)),
      decltype(bind_optional(layout, function, "", inputs.entropy)),
      decltype(bind_optional(layout, function, "", inputs.rollout_log_probs))>{
      layout.bind(function, "log_probs", inputs.log_probs),
      layout.bind(function, "old_log_probs", inputs.old_log_probs),
      layout.bind(function, "advantages", inputs.advantages),
      bind_optional(layout, function, "ref_log_probs", inputs.ref_log_probs),
      bind_optional(layout, function, "entropy", inputs.entropy),
      bind_optional(layout, function, "rollout_log_probs", inputs.rollout_log_probs)};
  auto grad = layout.bind(function, "grad_log_probs_out", grad_log_probs_out);
  auto grad_entropy = bind_optional(layout, function, "grad_entropy_out", grad_entropy_out);
  rlcore::detail::validate_policy_options(
      function, options, is_present<decltype(views.ref_log_probs)>,
      is_present<decltype(views.entropy)>, is_present<decltype(views.rollout_log_probs)>,
      is_present<decltype(grad_entropy)>, layout.rows());
  run(views, grad, grad_entropy, is_present<decltype(views.entropy)>);
}

} // namespace detail

/// Fused policy objective on device tensors: the contract of rlcore::policy_objective (formula,
/// shapes, gradient, options and errors in objective/policy.hpp), one fused pass (header comment).
///   layout              device padded or packed layout (rlcore::cuda::padded / packed)
///   inputs              rlcore::policy_inputs{log_probs, old_log_probs, advantages [, ref]
///                       [, entropy] [, rollout_log_probs]}, device per-token tensors
///   grad_log_probs_out  device per-token output d loss / d lp (0 at masked slots)
///   grad_entropy_out    device per-token output d loss / d entropy, or rlcore::none
///   options             rlcore::policy_options (defaults as on the CPU)
///   ctx                 stream and memory resource
template <batch_layout Layout, class LP, class Old, class Adv, class Ref, class Ent, class Roll,
          class Grad, class GradEntropy>
requires std::same_as<typename Layout::space, device_space> objective_result
policy_objective(const Layout& layout, const policy_inputs<LP, Old, Adv, Ref, Ent, Roll>& inputs,
                 Grad&& grad_log_probs_out, GradEntropy&& grad_entropy_out,
                 const policy_options& options = {}, const device_context& ctx = {}) {
  constexpr const char* function = "policy_objective";
  auto temp = ctx.allocate<unsigned char>(
      static_cast<index_t>(detail::fused_policy_temp_bytes(layout.rows())));
  bool has_entropy = false;
  detail::bind_policy_arguments(
      function, layout, inputs, grad_log_probs_out, grad_entropy_out, options,
      [&](const auto& views, const auto& grad, const auto& grad_entropy, bool entropy) {
        has_entropy = entropy;
        detail::enqueue_fused_policy_objective(function, temp.data(), layout, views, grad,
                                               grad_entropy, options, ctx);
      });
  rlcore::detail::policy_token_sums sums{};
  ctx.copy_to_host(reinterpret_cast<const rlcore::detail::policy_token_sums*>(temp.data()), 1,
                   &sums);
  rlcore::detail::check_global_tokens(function, options.aggregation, sums.valid);
  return rlcore::detail::finish_policy_metrics(sums, has_entropy);
}

/// CUB-style two-phase form of the fused policy objective: with d_temp == nullptr sets
/// temp_bytes and returns; otherwise validates, enqueues the pass on ctx.stream and returns
/// without waiting (except for token_mean without global_tokens, which needs the valid-token
/// count first). The loss and metrics are then read with finish_policy_objective(d_temp, ...).
template <batch_layout Layout, class LP, class Old, class Adv, class Ref, class Ent, class Roll,
          class Grad, class GradEntropy>
requires std::same_as<typename Layout::space, device_space>
void policy_objective(void* d_temp, std::size_t& temp_bytes, const Layout& layout,
                      const policy_inputs<LP, Old, Adv, Ref, Ent, Roll>& inputs,
                      Grad&& grad_log_probs_out, GradEntropy&& grad_entropy_out,
                      const policy_options& options, const device_context& ctx) {
  constexpr const char* function = "policy_objective";
  const std::size_t needed = detail::fused_policy_temp_bytes(layout.rows());
  if (d_temp == nullptr) {
    temp_bytes = needed;
    return;
  }
  rlcore::detail::require(temp_bytes >= needed, function, "temp_bytes", "expected at least ",
                          needed, ", got ", temp_bytes);
  detail::bind_policy_arguments(
      function, layout, inputs, grad_log_probs_out, grad_entropy_out, options,
      [&](const auto& views, const auto& grad, const auto& grad_entropy, bool) {
        detail::enqueue_fused_policy_objective(function, d_temp, layout, views, grad, grad_entropy,
                                               options, ctx);
      });
}

/// Waits for the two-phase policy_objective that used d_temp and returns its loss and metrics.
inline objective_result finish_policy_objective(const void* d_temp, const policy_options& options,
                                                bool has_entropy, const device_context& ctx) {
  rlcore::detail::policy_token_sums sums{};
  ctx.copy_to_host(static_cast<const rlcore::detail::policy_token_sums*>(d_temp), 1, &sums);
  rlcore::detail::check_global_tokens("policy_objective", options.aggregation, sums.valid);
  return rlcore::detail::finish_policy_metrics(sums, has_entropy);
}

/// GRPO loss (DeepSeekMath eq. 3, negated) on device tensors, fused: the contract of
/// rlcore::grpo_objective (objective/grpo.hpp; defaults eps 0.2, beta 0.04, k3,
/// seq-mean-token-mean).
template <batch_layout Layout, class LP, class Old, class Ref, class Adv, class Grad>
requires std::same_as<typename Layout::space, device_space> objective_result
grpo_objective(const Layout& layout, const LP& log_probs, const Old& old_log_probs,
               const Ref& ref_log_probs, const Adv& advantages, Grad&& grad_log_probs_out,
               const grpo_options& options = {}, const device_context& ctx = {}) {
  return cuda::policy_objective(
      layout, policy_inputs<LP, Old, Adv, Ref>{log_probs, old_log_probs, advantages, ref_log_probs},
      grad_log_probs_out, none, options.as_policy_options(), ctx);
}

} // namespace rlcore::cuda

// Fused GAE on the GPU: rlcore::cuda::gae_advantages has the contract of rlcore::gae_advantages
// (advantage/gae.hpp: same inputs, options, validation, multi-turn masks, outputs) and runs as ONE
// reverse scan per row over the composite (next value, advantage) carry maps of
// math/advantage.hpp (gae_carry_map), with no per-token scratch: 17 B/token for fp32 r, V, A,
// returns and a 1-byte mask, instead of the generic algorithm's two scans and scratch buffer.
// Kernel: kernels/gae_kernels.cuh (one block per row, carries in double, bitwise reproducible).
//
// Device memory: every per-token tensor and the layout must be in device memory.
#pragma once

#include "../../advantage/gae.hpp"
#include "execution.cuh"
#include "kernels/gae_kernels.cuh"

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace rlcore::cuda {
namespace detail {

/// Launch shape of the fused GAE kernel (a test and benchmark knob: every shape gives the same
/// recurrences; the grid never changes a bit of the result, threads/items change only the
/// association of the double-precision scan).
struct gae_launch {
  int items = 8;                ///< tokens per thread per tile of 256 threads: 8 or 16
  index_t max_blocks = 1 << 16; ///< grid = min(rows, max_blocks), >= 1
};

template <int Threads, int Items, class Layout, class R, class V, class A, class Ret>
void launch_gae_rows(const Layout& layout, const R& r, const V& v, const A& a, const Ret& ret,
                     double gamma, double lambda, unsigned grid, bool vectorized,
                     cudaStream_t stream) {
  if constexpr (
      !Layout::is_packed
      && std::is_same_v<
          typename R::value_type,
          float> && std::is_same_v<typename V::value_type, float> && std::is_same_v<typename A::value_type, float> && std::is_same_v<typename Ret::value_type, float>) {
    if (vectorized) {
      gae_rows_kernel<Threads, Items, true, double>
          <<<grid, Threads, 0, stream>>>(layout, r, v, a, ret, gamma, lambda);
      RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::gae_rows_kernel");
      return;
    }
  }
  gae_rows_kernel<Threads, Items, false, double>
      <<<grid, Threads, 0, stream>>>(layout, r, v, a, ret, gamma, lambda);
  RLCORE_CUDA_CHECK_LAUNCH("rlcore::cuda::detail::gae_rows_kernel");
}

/// Validates and binds the arguments of gae_advantages, then enqueues the fused scan (and the
/// whitening, which waits for its statistics) on ctx.stream.
template <class Layout, class Rewards, class Values, class Advantages, class Returns>
void enqueue_gae(const Layout& layout, const Rewards& token_rewards, const Values& values,
                 Advantages& advantages_out, Returns& returns_out, const gae_options& options,
                 const device_context& ctx, const gae_launch& launch = {}) {
  constexpr const char* function = "gae_advantages";
  rlcore::detail::require_unit_interval(function, "options.gamma", options.gamma);
  rlcore::detail::require_unit_interval(function, "options.lambda", options.lambda);
  rlcore::detail::validate_whiten(function, "options.whiten_kind", "options.whiten_eps",
                                  options.whiten_kind, options.whiten_eps);
  const auto r = layout.bind(function, "token_rewards", token_rewards);
  const auto v = layout.bind(function, "values", values);
  const auto a = layout.bind(function, "advantages_out", advantages_out);
  const auto ret = layout.bind(function, "returns_out", returns_out);
  const index_t rows = layout.rows();
  if (rows > 0) {
    const index_t cap = launch.max_blocks < 1 ? 1 : launch.max_blocks;
    const auto grid = static_cast<unsigned>(rows < cap ? rows : cap);
    const bool vectorized = mask4_rows(layout) && float4_rows(r) && float4_rows(v) && float4_rows(a)
                            && float4_rows(ret);
    if (launch.items == 16) {
      launch_gae_rows<256, 16>(layout, r, v, a, ret, options.gamma, options.lambda, grid,
                               vectorized, ctx.stream);
    } else {
      launch_gae_rows<256, 8>(layout, r, v, a, ret, options.gamma, options.lambda, grid, vectorized,
                              ctx.stream);
    }
  }
  if (options.whiten) {
    rlcore::detail::whiten_tokens(function, "options.whiten_kind", layout, a, a,
                                  options.whiten_kind, options.whiten_eps, ctx);
  }
}

} // namespace detail

/// Fused GAE advantages and returns on device tensors: the contract of rlcore::gae_advantages
/// (advantage/gae.hpp: formula, shapes, options, errors), backwards over the valid tokens of
/// each row, masked tokens skipped (both carries pass through), masked outputs 0:
///   A_t = (r_t - V_t) + gamma * V_next + gamma * lambda * A_next,   returns_t = A_t + V_t,
/// V_next, A_next of the next valid token of the row (0 past the last). One composite scan per
/// row (header comment), carries in double, outputs rounded once.
///   layout          device padded or packed layout (rlcore::cuda::padded / packed)
///   token_rewards   device per-token r;  values: device per-token V
///   advantages_out  device per-token A (whitened over the valid tokens when options.whiten)
///   returns_out     device per-token A + V (never whitened)
///   options         rlcore::gae_options (gamma = lambda = 1, whiten off by default)
///   ctx             stream and memory resource
/// Asynchronous on ctx.stream unless options.whiten (the whitening waits for its statistics).
/// Fastest with fp32 row-major tensors, T a multiple of 4 and 16-byte aligned rows (16-byte loads).
template <batch_layout Layout, class Rewards, class Values, class Advantages, class Returns>
requires std::same_as<typename Layout::space, device_space>
void gae_advantages(const Layout& layout, const Rewards& token_rewards, const Values& values,
                    Advantages&& advantages_out, Returns&& returns_out,
                    const gae_options& options = {}, const device_context& ctx = {}) {
  detail::enqueue_gae(layout, token_rewards, values, advantages_out, returns_out, options, ctx);
}

/// CUB-style two-phase form of gae_advantages: with d_temp == nullptr sets temp_bytes and
/// returns; otherwise validates and enqueues on ctx.stream. The fused scan needs no temporary
/// storage: temp_bytes is 1 (CUB's convention, so that an allocation of it is not null); the
/// whitening, when asked for, takes its own from ctx.resource.
template <batch_layout Layout, class Rewards, class Values, class Advantages, class Returns>
requires std::same_as<typename Layout::space, device_space>
void gae_advantages(void* d_temp, std::size_t& temp_bytes, const Layout& layout,
                    const Rewards& token_rewards, const Values& values, Advantages&& advantages_out,
                    Returns&& returns_out, const gae_options& options, const device_context& ctx) {
  constexpr std::size_t needed = 1;
  if (d_temp == nullptr) {
    temp_bytes = needed;
    return;
  }
  rlcore::detail::require(temp_bytes >= needed, "gae_advantages", "temp_bytes",
                          "expected at least ", needed, ", got ", temp_bytes);
  detail::enqueue_gae(layout, token_rewards, values, advantages_out, returns_out, options, ctx);
}

} // namespace rlcore::cuda

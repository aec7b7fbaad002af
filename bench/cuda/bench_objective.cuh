// Token-objective benchmarks of bench_cuda (section "objective"): the fused GRPO token objective
// over 2^24 fp32 tokens, its launch shapes, and calibration kernels moving the same bytes. Included
// by bench_cuda.cu after its helpers (time_ms, record, fill_*); one file per section so that each
// kernel family is tuned independently.
#pragma once

#include <chrono>
#include <cstdio>
#include <type_traits>

namespace {

/// Calibration: reads lp, old, ref, advantage, mask and writes one value per token (the fused
/// objective's minimal traffic) with a trivial formula.
__global__ void minimal_bytes_kernel(const float* lp, const float* old, const float* ref,
                                     const float* adv, const std::uint8_t* mask, float* out,
                                     index_t n) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    out[k] = mask[k] != 0 ? (lp[k] - old[k]) * adv[k] + ref[k] : 0.0f;
  }
}

/// Calibration with 16-byte accesses: the same bytes and formula as minimal_bytes_kernel, 4
/// tokens per thread per step (float4 loads and store, the 4 mask bytes in one load).
__global__ void minimal_bytes_vec4_kernel(const float4* lp, const float4* old, const float4* ref,
                                          const float4* adv, const unsigned* mask, float4* out,
                                          index_t n4) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n4;
       k += stride) {
    const float4 a = __ldcs(lp + k);
    const float4 b = __ldcs(old + k);
    const float4 c = __ldcs(ref + k);
    const float4 d = __ldcs(adv + k);
    const unsigned m = __ldcs(mask + k);
    float4 r;
    r.x = (m & 0xFFu) != 0 ? (a.x - b.x) * d.x + c.x : 0.0f;
    r.y = (m & 0xFF00u) != 0 ? (a.y - b.y) * d.y + c.y : 0.0f;
    r.z = (m & 0xFF0000u) != 0 ? (a.z - b.z) * d.z + c.z : 0.0f;
    r.w = (m & 0xFF000000u) != 0 ? (a.w - b.w) * d.w + c.w : 0.0f;
    __stcs(out + k, r);
  }
}

// --- fused token objective: GRPO (clip 0.2 + 0.04 k3, seq-mean-token-mean), 2^24 tokens -----
// lp, old, ref, advantage (fp32) and mask (u8) in, d loss / d lp (fp32) out: 21 bytes/token.
// Two input sets of 352 MB each (7x L2), alternated.
void bench_objective(rlcore::device_context& ctx, bool quick) {
  const index_t n = 16384;
  const index_t t_len = 1024;
  const index_t tokens = n * t_len;
  struct set {
    thrust::device_vector<float> lp, old, ref, adv;
  };
  std::vector<set> sets(2);
  thrust::device_vector<std::uint8_t> mask(tokens);
  thrust::device_vector<float> grad(tokens);
  ctx.for_each(tokens, fill_mask{thrust::raw_pointer_cast(mask.data()), t_len});
  for (int s = 0; s < 2; ++s) {
    for (auto* v : {&sets[s].lp, &sets[s].old, &sets[s].ref, &sets[s].adv}) {
      v->resize(tokens);
    }
    ctx.for_each(tokens,
                 fill_uniform{thrust::raw_pointer_cast(sets[s].lp.data()), -3, -0.1f, 11u + s});
    ctx.for_each(tokens,
                 fill_uniform{thrust::raw_pointer_cast(sets[s].old.data()), -3, -0.1f, 21u + s});
    ctx.for_each(tokens,
                 fill_uniform{thrust::raw_pointer_cast(sets[s].ref.data()), -3, -0.1f, 31u + s});
    ctx.for_each(tokens,
                 fill_uniform{thrust::raw_pointer_cast(sets[s].adv.data()), -1, 1, 41u + s});
  }
  const auto layout = rlcore::cuda::padded(
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(mask.data()), n, t_len));
  auto m = [&](thrust::device_vector<float>& x) {
    return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(x.data()), n, t_len);
  };
  using V = decltype(m(grad));
  const auto options = rlcore::grpo_options{}.as_policy_options();
  std::size_t temp_bytes = 0;
  auto g = m(grad);
  rlcore::cuda::policy_objective(nullptr, temp_bytes, layout,
                                 rlcore::policy_inputs<V, V, V, V>{m(sets[0].lp), m(sets[0].old),
                                                                   m(sets[0].adv), m(sets[0].ref)},
                                 g, rlcore::none, options, ctx);
  auto temp = ctx.allocate<unsigned char>(static_cast<index_t>(temp_bytes));
  const double bytes = 21.0 * double(tokens);
  const double ms = time_ms(
      [&](int k) {
        auto& s = sets[k % 2];
        rlcore::cuda::policy_objective(
            temp.data(), temp_bytes, layout,
            rlcore::policy_inputs<V, V, V, V>{m(s.lp), m(s.old), m(s.adv), m(s.ref)}, g,
            rlcore::none, options, ctx);
      },
      quick ? 5 : 20);
  const auto r = rlcore::cuda::finish_policy_objective(temp.data(), options, false, ctx);
  record("fused GRPO token objective, 2^24 fp32 tokens (fwd+bwd)", ms, bytes,
         "loss " + std::to_string(r.loss));
  const double ms_sync = time_ms(
      [&](int k) {
        auto& s = sets[k % 2];
        (void)rlcore::cuda::grpo_objective(layout, m(s.lp), m(s.old), m(s.ref), m(s.adv), g,
                                           rlcore::grpo_options{}, ctx);
      },
      quick ? 5 : 20);
  record("  same, synchronous call returning host metrics", ms_sync, bytes);
  auto token_mean = options;
  token_mean.aggregation.mode = rlcore::aggregation::token_mean;
  token_mean.aggregation.global_tokens = double(tokens); // no count pass, no row pass
  const double ms_token_mean = time_ms(
      [&](int k) {
        auto& s = sets[k % 2];
        rlcore::cuda::policy_objective(
            temp.data(), temp_bytes, layout,
            rlcore::policy_inputs<V, V, V, V>{m(s.lp), m(s.old), m(s.adv), m(s.ref)}, g,
            rlcore::none, token_mean, ctx);
      },
      quick ? 5 : 20);
  record("  same with token-mean over given N_tokens (no row pre-pass)", ms_token_mean, bytes);
  const double ms_floor_kernel = time_ms(
      [&](int k) {
        auto& s = sets[k % 2];
        minimal_bytes_kernel<<<2048, 256>>>(
            thrust::raw_pointer_cast(s.lp.data()), thrust::raw_pointer_cast(s.old.data()),
            thrust::raw_pointer_cast(s.ref.data()), thrust::raw_pointer_cast(s.adv.data()),
            thrust::raw_pointer_cast(mask.data()), thrust::raw_pointer_cast(grad.data()), tokens);
      },
      quick ? 5 : 20);
  record("  reference: elementwise kernel moving the same 21 B/token", ms_floor_kernel, bytes);
  int sms = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const double ms_floor_vec4 = time_ms(
      [&](int k) {
        auto& s = sets[k % 2];
        minimal_bytes_vec4_kernel<<<sms * 8, 256>>>(
            reinterpret_cast<const float4*>(thrust::raw_pointer_cast(s.lp.data())),
            reinterpret_cast<const float4*>(thrust::raw_pointer_cast(s.old.data())),
            reinterpret_cast<const float4*>(thrust::raw_pointer_cast(s.ref.data())),
            reinterpret_cast<const float4*>(thrust::raw_pointer_cast(s.adv.data())),
            reinterpret_cast<const unsigned*>(thrust::raw_pointer_cast(mask.data())),
            reinterpret_cast<float4*>(thrust::raw_pointer_cast(grad.data())), tokens / 4);
      },
      quick ? 5 : 20);
  record("  reference: same with 16-byte loads and stores", ms_floor_vec4, bytes);
  // Other shapes of the tiled kernel (tile_config<threads, float4 groups per lane, min blocks per
  // SM>); the default is tile_config<256, 2, 2> (104 registers).
  const auto tiled_ms = [&](auto config, const rlcore::cuda::detail::policy_launch& launch) {
    using config_t = decltype(config);
    return time_ms(
        [&](int k) {
          auto& s = sets[k % 2];
          const rlcore::policy_inputs<V, V, V, V> inputs{m(s.lp), m(s.old), m(s.adv), m(s.ref)};
          auto none = rlcore::none;
          rlcore::cuda::detail::bind_policy_arguments(
              "policy_objective", layout, inputs, g, none, options,
              [&](const auto& views, const auto& gv, const auto& ge, bool) {
                rlcore::cuda::detail::enqueue_fused_policy_objective<config_t>(
                    "policy_objective", temp.data(), layout, views, gv, ge, options, ctx, launch);
              });
        },
        quick ? 5 : 20);
  };
  using rlcore::cuda::detail::tile_config;
  record("  tiled kernel, 256 threads x 1 float4 group per lane, 3 blocks/SM (80 registers)",
         tiled_ms(tile_config<256, 1, 3>{}, {}), bytes);
  record("  tiled kernel, 256 threads x 2 float4 groups per lane, 3 blocks/SM (80 registers)",
         tiled_ms(tile_config<256, 2, 3>{}, {}), bytes);
  record("  tiled kernel, 256 threads x 1 float4 group per lane, 4 blocks/SM (64 registers)",
         tiled_ms(tile_config<256, 1, 4>{}, {}), bytes);
  record("  tiled kernel, 128 threads x 1 float4 group per lane, 8 blocks/SM",
         tiled_ms(tile_config<128, 1, 8>{}, {}), bytes);
  // The tail kernel launched plainly instead of as a programmatic dependent (same bits).
  record("  chunk slots summed by a tail kernel, plain launch",
         tiled_ms(rlcore::cuda::detail::default_tile_config{},
                  {0, rlcore::cuda::detail::policy_tail::kernel}),
         bytes);
  // Where the time goes: the default tiled kernel launched with arguments prepared once (no
  // binding, validation or occupancy query per call), with and without the tail kernel that sums
  // its chunk slots.
  {
    auto none = rlcore::none;
    const rlcore::policy_inputs<V, V, V, V> in0{m(sets[0].lp), m(sets[0].old), m(sets[0].adv),
                                                m(sets[0].ref)};
    const rlcore::policy_inputs<V, V, V, V> in1{m(sets[1].lp), m(sets[1].old), m(sets[1].adv),
                                                m(sets[1].ref)};
    rlcore::cuda::detail::bind_policy_arguments(
        "policy_objective", layout, in0, g, none, options,
        [&](const auto& views0, const auto& gv, const auto&, bool) {
          rlcore::cuda::detail::bind_policy_arguments(
              "policy_objective", layout, in1, g, none, options,
              [&](const auto& views1, const auto&, const auto&, bool) {
                namespace cd = rlcore::cuda::detail;
                auto p = rlcore::detail::make_policy_params<float>(options);
                p.weights = rlcore::detail::prepare_aggregation("policy_objective",
                                                                options.aggregation, layout, ctx);
                using L = std::decay_t<decltype(layout)>;
                using Vw = std::decay_t<decltype(views0)>;
                using Gr = std::decay_t<decltype(gv)>;
                auto kernel = cd::clipped_policy_tiles_kernel<cd::default_tile_config, true, true,
                                                              true, L, Vw, Gr>;
                const auto scratch =
                    cd::make_tile_scratch(static_cast<rlcore::detail::policy_token_sums*>(
                                              static_cast<void*>(temp.data())),
                                          n);
                const auto device = cd::current_tile_device();
                const unsigned grid = cd::policy_tiles_grid(
                    kernel, cd::default_tile_config::threads, scratch.chunks, {}, device);
                const auto launch = [&](int k, const cd::tile_scratch& s) {
                  kernel<<<grid, cd::default_tile_config::threads, 0, ctx.stream>>>(
                      layout, k % 2 != 0 ? views1 : views0, gv, p, s);
                };
                record("  tiled kernel alone (no chunk-slot sum), prepared arguments",
                       time_ms([&](int k) { launch(k, scratch); }, quick ? 5 : 20), bytes);
                record("  tiled kernel + tail kernel, plain launch, prepared arguments",
                       time_ms(
                           [&](int k) {
                             launch(k, scratch);
                             cd::enqueue_tile_chunks_reduce(scratch, false, ctx);
                           },
                           quick ? 5 : 20),
                       bytes);
                record("  tiled kernel + tail kernel, dependent launch, prepared arguments",
                       time_ms(
                           [&](int k) {
                             launch(k, scratch);
                             cd::enqueue_tile_chunks_reduce(scratch, device.major >= 9, ctx);
                           },
                           quick ? 5 : 20),
                       bytes);
                const auto host_start = std::chrono::steady_clock::now();
                for (int k = 0; k < 20; ++k) {
                  auto& s = sets[k % 2];
                  rlcore::cuda::policy_objective(
                      temp.data(), temp_bytes, layout,
                      rlcore::policy_inputs<V, V, V, V>{m(s.lp), m(s.old), m(s.adv), m(s.ref)}, g,
                      rlcore::none, options, ctx);
                }
                const double host_us = std::chrono::duration<double, std::micro>(
                                           std::chrono::steady_clock::now() - host_start)
                                           .count()
                                       / 20;
                CHECK_CUDA(cudaDeviceSynchronize());
                std::printf("  host time to enqueue one policy_objective call: %.1f us\n", host_us);
              });
        });
  }
  const double ms_generic = time_ms(
      [&](int k) {
        auto& s = sets[k % 2];
        (void)rlcore::grpo_objective(layout, m(s.lp), m(s.old), m(s.ref), m(s.adv), g,
                                     rlcore::grpo_options{}, ctx);
      },
      quick ? 3 : 10);
  record("  same, generic rlcore::grpo_objective on the device context", ms_generic, bytes);
}

} // namespace

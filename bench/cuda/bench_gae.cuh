// GAE benchmarks of bench_cuda (section "gae"): the fused and generic GAE over 256 x 8192 fp32
// tokens against one thread per sequence, and the launch-overhead reference. Included by
// bench_cuda.cu after its helpers (time_ms, record, fill_*).
#pragma once

namespace {

/// One thread per sequence: the textbook GAE loop (reference point for the scan).
__global__ void gae_one_thread_per_sequence(const float* rewards, const float* values,
                                            const std::uint8_t* mask, float* advantages,
                                            float* returns, index_t rows, index_t cols, float gamma,
                                            float lambda) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) {
    return;
  }
  double next_value = 0;
  double running = 0;
  for (index_t t = cols - 1; t >= 0; --t) {
    const index_t k = i * cols + t;
    if (mask[k] == 0) {
      advantages[k] = 0;
      returns[k] = 0;
      continue;
    }
    const double v = values[k];
    const double delta = rewards[k] + gamma * next_value - v;
    running = delta + gamma * lambda * running;
    advantages[k] = static_cast<float>(running);
    returns[k] = static_cast<float>(running + v);
    next_value = v;
  }
}

/// Launch-overhead reference.
__global__ void empty_kernel() {
}

/// Bandwidth reference at the GAE's shape and bytes: reads r, V (fp32) and the mask (u8), writes
/// two fp32 outputs (17 B/token) with 16-byte accesses, 4 tokens per thread, no dependency
/// between tokens.
__global__ void gae_bytes_reference(const float4* rewards, const float4* values,
                                    const unsigned* mask, float4* advantages, float4* returns,
                                    index_t groups) {
  const index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= groups) {
    return;
  }
  const float4 r = __ldcs(rewards + k);
  const float4 v = __ldcs(values + k);
  const unsigned m = __ldcs(mask + k);
  const float4 a = make_float4(
      (m & 0xFFu) != 0u ? r.x - v.x : 0.0f, (m & 0xFF00u) != 0u ? r.y - v.y : 0.0f,
      (m & 0xFF0000u) != 0u ? r.z - v.z : 0.0f, (m & 0xFF000000u) != 0u ? r.w - v.w : 0.0f);
  __stcs(advantages + k, a);
  __stcs(returns + k, make_float4(a.x + v.x, a.y + v.y, a.z + v.z, a.w + v.w));
}

/// gae_stage_probe's composition of segment maps: math::gae_then with the power
/// (gamma lambda)^(earlier.count - 1) = low[k % 64] * high[k / 64] from the CTA's tables.
struct stage_probe_then {
  double gamma;
  double gamma_lambda;
  const double* low;
  const double* high;
  __device__ rlcore::math::gae_segment_map<double>
  operator()(const rlcore::math::gae_segment_map<double>& later,
             const rlcore::math::gae_segment_map<double>& earlier) const {
    const int k = earlier.count > 0 ? earlier.count - 1 : 0;
    return rlcore::math::gae_then(later, earlier, gamma, gamma_lambda, low[k & 63] * high[k >> 6]);
  }
};

/// Timing probe, not a GAE (its results are wrong past a piece or a warp): the per-round
/// structure of the fused kernel as it was before the coalesced ownership (a thread owns 8
/// consecutive tokens: each 16-byte access of a warp touches 32 half sectors 32 bytes apart) at
/// its default shape (256 threads x 8 tokens, 2 CTAs per row, 2 rounds of
/// a 8192-token row, 16-byte accesses) with stages left out, to see where the kernel's time goes:
///   Stage 0: loads, the 8-token fold in double, the walk from (0, 0) and the stores (no scan);
///   Stage 1: + the warp scan of the piece maps (cub::WarpScan), the walk from the lane's carry;
///   Stage 2: + the block barrier, warp 0's scan of the warp aggregates and a second barrier (the
///            fused kernel without the exchange between the row's two CTAs).
template <int Stage>
__global__ void __launch_bounds__(256, 4)
    gae_stage_probe(const float* rewards, const float* values, const std::uint8_t* mask,
                    float* advantages, float* returns, index_t cols, double gamma, double lambda) {
  namespace d = rlcore::cuda::detail;
  using map = rlcore::math::gae_segment_map<double>;
  constexpr int items = 8;
  constexpr index_t chunk = 256 * items;
  __shared__ cub::WarpScan<map>::TempStorage warp_storage[8];
  __shared__ cub::WarpScan<map, 8>::TempStorage warps_storage;
  __shared__ map warp_aggregates[8];
  __shared__ map warp_prefixes[8];
  __shared__ double low[64];
  __shared__ double high[chunk / 64];
  const double gamma_lambda = gamma * lambda;
  if (threadIdx.x < 64) {
    low[threadIdx.x] = rlcore::math::gae_power(gamma_lambda, static_cast<int>(threadIdx.x));
  } else if (threadIdx.x < 64 + chunk / 64) {
    high[threadIdx.x - 64] =
        rlcore::math::gae_power(gamma_lambda, 64 * static_cast<int>(threadIdx.x - 64));
  }
  __syncthreads();
  const stage_probe_then then{gamma, gamma_lambda, low, high};
  const index_t i = blockIdx.x / 2;
  const auto rank = static_cast<index_t>(blockIdx.x % 2);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const d::gae_row_pointers row{rewards + i * cols, values + i * cols, mask + i * cols,
                                advantages + i * cols, returns + i * cols};
  const index_t piece = 255 - static_cast<index_t>(threadIdx.x);
  for (index_t end = cols; end > 0; end -= 2 * chunk) {
    const index_t first = end - (rank + 1) * chunk + piece * items;
    float r[items];
    float v[items];
    bool valid[items];
    d::load_gae_groups<items, 4>(row, first, r, v, valid); // consecutive tokens
    map piece_map{};
#pragma unroll
    for (int j = items - 1; j >= 0; --j) {
      piece_map = rlcore::math::gae_fold_token(piece_map, valid[j], gamma, gamma_lambda,
                                               double(r[j]), double(v[j]));
    }
    map carry{};
    if constexpr (Stage >= 1) {
      map inclusive{};
      map later{};
      cub::WarpScan<map>(warp_storage[warp]).Scan(piece_map, inclusive, later, then);
      carry = lane == 0 ? map{} : later;
      if constexpr (Stage >= 2) {
        if (lane == 31) {
          warp_aggregates[warp] = inclusive;
        }
        __syncthreads();
        if (warp == 0) {
          map warp_inclusive{};
          map warp_exclusive{};
          if (lane < 8) {
            cub::WarpScan<map, 8>(warps_storage)
                .Scan(warp_aggregates[lane], warp_inclusive, warp_exclusive, then);
            warp_prefixes[lane] = lane == 0 ? map{} : warp_exclusive;
          }
        }
        __syncthreads();
        carry = lane == 0 ? warp_prefixes[warp] : then(warp_prefixes[warp], later);
      }
    }
    (void)piece_map;
    double next_value = carry.value;
    double next_advantage = carry.advantage;
    float a_out[items];
    float ret_out[items];
#pragma unroll
    for (int j = items - 1; j >= 0; --j) {
      const double value = v[j];
      const double advantage = rlcore::math::gae_advantage(gamma, gamma_lambda, double(r[j]), value,
                                                           next_value, next_advantage);
      a_out[j] = valid[j] ? static_cast<float>(advantage) : 0.0f;
      ret_out[j] = valid[j] ? static_cast<float>(advantage + value) : 0.0f;
      next_value = valid[j] ? value : next_value;
      next_advantage = valid[j] ? advantage : next_advantage;
    }
#pragma unroll
    for (int q = 0; q < items / 4; ++q) {
      if (first + 4 * q >= 0) {
        d::store4(row.advantages + first + 4 * q, &a_out[4 * q]);
        d::store4(row.returns + first + 4 * q, &ret_out[4 * q]);
      }
    }
  }
}

/// Timing probe, not a GAE: stage 0 of gae_stage_probe in the coalesced ownership of the fused
/// kernel (a thread's 8 tokens are 2 groups of 4 consecutive tokens 128 apart; a warp's 16-byte
/// access covers 512 contiguous bytes): loads, the two 4-token folds, the walks from (0, 0) and
/// the stores, no scan.
__global__ void __launch_bounds__(256, 4)
    gae_coalesced_probe(const float* rewards, const float* values, const std::uint8_t* mask,
                        float* advantages, float* returns, index_t cols, double gamma,
                        double lambda) {
  namespace d = rlcore::cuda::detail;
  using map = rlcore::math::gae_segment_map<double>;
  constexpr int items = 8;
  constexpr index_t chunk = 256 * items;
  const double gamma_lambda = gamma * lambda;
  const index_t i = blockIdx.x / 2;
  const auto rank = static_cast<index_t>(blockIdx.x % 2);
  const auto warp = static_cast<index_t>(threadIdx.x / 32);
  const auto lane = static_cast<index_t>(threadIdx.x % 32);
  const d::gae_row_pointers row{rewards + i * cols, values + i * cols, mask + i * cols,
                                advantages + i * cols, returns + i * cols};
  for (index_t end = cols; end > 0; end -= 2 * chunk) {
    const index_t first = end - (rank + 1) * chunk + (7 - warp) * 256 + 4 * (31 - lane);
    float r[items];
    float v[items];
    bool valid[items];
    d::load_gae_groups<items>(row, first, r, v, valid);
    float a_out[items];
    float ret_out[items];
#pragma unroll
    for (int g = 0; g < 2; ++g) {
      map group_map{};
#pragma unroll
      for (int j = 4 * g + 3; j >= 4 * g; --j) {
        group_map = rlcore::math::gae_fold_token(group_map, valid[j], gamma, gamma_lambda,
                                                 double(r[j]), double(v[j]));
      }
      // the walk starts from (0, 0) (a group's count is at most 4) after the fold, as in the kernel
      double next_value = group_map.count == 12345 ? group_map.value : 0.0;
      double next_advantage = group_map.count == 12345 ? group_map.advantage : 0.0;
#pragma unroll
      for (int j = 4 * g + 3; j >= 4 * g; --j) {
        const double value = v[j];
        const double advantage = rlcore::math::gae_advantage(gamma, gamma_lambda, double(r[j]),
                                                             value, next_value, next_advantage);
        a_out[j] = valid[j] ? static_cast<float>(advantage) : 0.0f;
        ret_out[j] = valid[j] ? static_cast<float>(advantage + value) : 0.0f;
        next_value = valid[j] ? value : next_value;
        next_advantage = valid[j] ? advantage : next_advantage;
      }
    }
#pragma unroll
    for (int g = 0; g < 2; ++g) {
      if (first + 128 * g >= 0) {
        d::store4(row.advantages + first + 128 * g, &a_out[4 * g]);
        d::store4(row.returns + first + 128 * g, &ret_out[4 * g]);
      }
    }
  }
}

/// Mean time (ms) of one of `calls` enqueues captured in a CUDA graph, timed as time_ms of the
/// graph launch divided by `calls`: what is left of a call without per-launch host overhead.
double graph_ms_per_call(int calls, int reps,
                         const std::function<void(int, cudaStream_t)>& enqueue) {
  cudaStream_t stream{};
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph{};
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int k = 0; k < calls; ++k) {
    enqueue(k, stream);
  }
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec{};
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double ms = time_ms([&](int) { CHECK_CUDA(cudaGraphLaunch(exec, nullptr)); }, reps) / calls;
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return ms;
}

// --- GAE, 256 x 8192 tokens: r, V (fp32), mask (u8) in; A, returns (fp32) out: 17 B/token ----
// 4 input/output sets of 36 MB (rotated: one set fits in L2).
void bench_gae(rlcore::device_context& ctx, bool quick) {
  const index_t n = 256;
  const index_t t_len = 8192;
  const index_t tokens = n * t_len;
  const int set_count = 4;
  std::vector<thrust::device_vector<float>> r(set_count), v(set_count), a(set_count),
      ret(set_count);
  std::vector<thrust::device_vector<std::uint8_t>> mk(set_count);
  for (int s = 0; s < set_count; ++s) {
    r[s].resize(tokens);
    v[s].resize(tokens);
    a[s].resize(tokens);
    ret[s].resize(tokens);
    mk[s].resize(tokens);
    ctx.for_each(tokens, fill_uniform{thrust::raw_pointer_cast(r[s].data()), -1, 1, 51u + s});
    ctx.for_each(tokens, fill_uniform{thrust::raw_pointer_cast(v[s].data()), -1, 1, 61u + s});
    ctx.for_each(tokens, fill_mask{thrust::raw_pointer_cast(mk[s].data()), t_len});
  }
  auto m = [&](auto& x) {
    return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(x.data()), n, t_len);
  };
  const double bytes = 17.0 * double(tokens);
  const rlcore::gae_options options{0.99, 0.95};
  const double ms_scan = time_ms(
      [&](int k) {
        const int s = k % set_count;
        auto av = m(a[s]);
        auto rv = m(ret[s]);
        rlcore::gae_advantages(rlcore::cuda::padded(m(mk[s])), m(r[s]), m(v[s]), av, rv, options,
                               ctx);
      },
      quick ? 5 : 20);
  const double ms_naive = time_ms(
      [&](int k) {
        const int s = k % set_count;
        gae_one_thread_per_sequence<<<(n + 127) / 128, 128>>>(
            thrust::raw_pointer_cast(r[s].data()), thrust::raw_pointer_cast(v[s].data()),
            thrust::raw_pointer_cast(mk[s].data()), thrust::raw_pointer_cast(a[s].data()),
            thrust::raw_pointer_cast(ret[s].data()), n, t_len, 0.99f, 0.95f);
      },
      quick ? 2 : 5);
  const auto fused_call = [&](const rlcore::cuda::detail::gae_launch& launch, int k,
                              cudaStream_t stream) {
    const int s = k % set_count;
    auto av = m(a[s]);
    auto rv = m(ret[s]);
    const rlcore::device_context c{stream};
    rlcore::cuda::detail::enqueue_gae(rlcore::cuda::padded(m(mk[s])), m(r[s]), m(v[s]), av, rv,
                                      options, c, launch);
  };
  const auto fused_ms = [&](const rlcore::cuda::detail::gae_launch& launch) {
    return time_ms([&](int k) { fused_call(launch, k, nullptr); }, quick ? 5 : 50);
  };
  // The public entry (default launch shape: 2 CTAs per row here) through the two-phase form.
  std::size_t temp_bytes = 0;
  rlcore::cuda::gae_advantages(nullptr, temp_bytes, rlcore::cuda::padded(m(mk[0])), m(r[0]),
                               m(v[0]), m(a[0]), m(ret[0]), options, ctx);
  thrust::device_vector<unsigned char> temp(temp_bytes);
  const double ms_fused = time_ms(
      [&](int k) {
        const int s = k % set_count;
        auto av = m(a[s]);
        auto rv = m(ret[s]);
        rlcore::cuda::gae_advantages(thrust::raw_pointer_cast(temp.data()), temp_bytes,
                                     rlcore::cuda::padded(m(mk[s])), m(r[s]), m(v[s]), av, rv,
                                     options, ctx);
      },
      quick ? 5 : 50);
  record("GAE 256 x 8192, fused cuda::gae_advantages (default: 2-CTA clusters here)", ms_fused,
         bytes, "speed-up vs one thread per sequence: " + std::to_string(ms_naive / ms_fused));
  // The same calls captured in a CUDA graph (50 calls per graph, rotating the 4 sets): what is
  // left when the per-launch host and queue overhead is gone.
  const double ms_graph = graph_ms_per_call(
      50, quick ? 2 : 5, [&](int k, cudaStream_t stream) { fused_call({}, k, stream); });
  record("  fused, default shape, 50 calls in a CUDA graph (per call)", ms_graph, bytes);
  record("  fused, one block per row (cluster 1)", fused_ms({8, 1 << 16, 1}), bytes);
  record("  fused, 2-CTA clusters per row", fused_ms({8, 1 << 16, 2}), bytes);
  record("  fused, 4-CTA clusters per row (1024 CTAs: more than fit at once)",
         fused_ms({8, 1 << 16, 4}), bytes);
  record("  fused, 8-CTA clusters per row (4 CTAs of each past the row start)",
         fused_ms({8, 1 << 16, 8}), bytes);
  record("  fused, 256 threads x 16 tokens, cluster 1", fused_ms({16, 1 << 16, 1}), bytes);
  record("  fused, 256 threads x 16 tokens, 2-CTA clusters", fused_ms({16, 1 << 16, 2}), bytes);
  // Where the time goes (probes, not a GAE): gae_stage_probe, the previous kernel's ownership
  // (8 consecutive tokens per thread) with stages left out; gae_coalesced_probe, the data path of
  // the current ownership alone.
  const auto probe_ms = [&](auto stage_constant) {
    constexpr int stage = decltype(stage_constant)::value;
    return time_ms(
        [&](int k) {
          const int s = k % set_count;
          gae_stage_probe<stage><<<static_cast<unsigned>(2 * n), 256>>>(
              thrust::raw_pointer_cast(r[s].data()), thrust::raw_pointer_cast(v[s].data()),
              thrust::raw_pointer_cast(mk[s].data()), thrust::raw_pointer_cast(a[s].data()),
              thrust::raw_pointer_cast(ret[s].data()), t_len, 0.99, 0.95);
        },
        quick ? 5 : 50);
  };
  record("  probe (not a GAE), 8 consecutive tokens per thread: loads, fold, walk, stores",
         probe_ms(std::integral_constant<int, 0>{}), bytes);
  record("  probe (not a GAE): + warp scan", probe_ms(std::integral_constant<int, 1>{}), bytes);
  record("  probe (not a GAE): + block barriers and warp 0's cross-warp scan (no exchange)",
         probe_ms(std::integral_constant<int, 2>{}), bytes);
  record("  probe (not a GAE): coalesced loads, 2 x 4-token folds, walks, stores; no scan",
         time_ms(
             [&](int k) {
               const int s = k % set_count;
               gae_coalesced_probe<<<static_cast<unsigned>(2 * n), 256>>>(
                   thrust::raw_pointer_cast(r[s].data()), thrust::raw_pointer_cast(v[s].data()),
                   thrust::raw_pointer_cast(mk[s].data()), thrust::raw_pointer_cast(a[s].data()),
                   thrust::raw_pointer_cast(ret[s].data()), t_len, 0.99, 0.95);
             },
             quick ? 5 : 50),
         bytes);
  const index_t groups = tokens / 4;
  record("  reference: elementwise kernel moving the same 17 B/token (16-byte accesses)",
         time_ms(
             [&](int k) {
               const int s = k % set_count;
               gae_bytes_reference<<<static_cast<unsigned>((groups + 255) / 256), 256>>>(
                   reinterpret_cast<const float4*>(thrust::raw_pointer_cast(r[s].data())),
                   reinterpret_cast<const float4*>(thrust::raw_pointer_cast(v[s].data())),
                   reinterpret_cast<const unsigned*>(thrust::raw_pointer_cast(mk[s].data())),
                   reinterpret_cast<float4*>(thrust::raw_pointer_cast(a[s].data())),
                   reinterpret_cast<float4*>(thrust::raw_pointer_cast(ret[s].data())), groups);
             },
             quick ? 5 : 50),
         bytes);
  record("  GAE generic gae_advantages (one reverse_scan_rows)", ms_scan, bytes,
         "speed-up vs one thread per sequence: " + std::to_string(ms_naive / ms_scan));
  record("  GAE one thread per sequence (reference point)", ms_naive, bytes);
  // Launch overhead floor: an empty kernel back to back, and in a graph.
  const double ms_empty = time_ms([&](int) { empty_kernel<<<1, 32>>>(); }, quick ? 5 : 50);
  std::printf("  (an empty kernel back to back: %.4f ms per launch)\n", ms_empty);
  results.push_back({"empty kernel launch", ms_empty, 0, 0, ""});
  const double ms_empty_graph = graph_ms_per_call(
      50, quick ? 2 : 5, [](int, cudaStream_t stream) { empty_kernel<<<1, 32, 0, stream>>>(); });
  std::printf("  (an empty kernel in a CUDA graph: %.4f ms per launch)\n", ms_empty_graph);
  results.push_back({"empty kernel launch in a CUDA graph", ms_empty_graph, 0, 0, ""});
}

} // namespace

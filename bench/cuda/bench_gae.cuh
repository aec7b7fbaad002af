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
  rlcore::cuda::detail::wait_for_prior_grids(); // no-op unless launched as a dependent
  rlcore::cuda::detail::allow_dependent_grids();
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

/// Timing probe, not a GAE: the data path of the fused kernel alone, in its ownership (a thread's
/// 8 tokens are 2 groups of 4 consecutive tokens 128 apart; a warp's 16-byte access covers 512
/// contiguous bytes): loads, the two 4-token folds of the carry maps, the walks from the carry 0
/// and the stores; no scan, no block step, no exchange.
__global__ void __launch_bounds__(256, 4)
    gae_coalesced_probe(const float* rewards, const float* values, const std::uint8_t* mask,
                        float* advantages, float* returns, index_t cols, double gamma,
                        double lambda) {
  namespace d = rlcore::cuda::detail;
  using map = rlcore::math::gae_carry_map<double>;
  constexpr int items = 8;
  constexpr index_t chunk = 256 * items;
  d::wait_for_prior_grids(); // no-op unless launched as a dependent
  d::allow_dependent_grids();
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
        group_map = rlcore::math::gae_carry_fold_token(group_map, valid[j], gamma, lambda,
                                                       gamma_lambda, double(r[j]), double(v[j]));
      }
      // the walk starts from the carry 0 after the fold (kept live as in the kernel)
      double next_carry = group_map.multiplier == 12345.0 ? group_map.offset : 0.0;
#pragma unroll
      for (int j = 4 * g + 3; j >= 4 * g; --j) {
        const double value = v[j];
        const double advantage =
            rlcore::math::gae_advantage_from_carry(gamma, double(r[j]), value, next_carry);
        a_out[j] = valid[j] ? static_cast<float>(advantage) : 0.0f;
        ret_out[j] = valid[j] ? static_cast<float>(advantage + value) : 0.0f;
        next_carry = valid[j] ? rlcore::math::gae_carry(lambda, value, advantage) : next_carry;
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
  // The public entry (default launch shape: one block per row here) through the two-phase form.
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
  record("GAE 256 x 8192, fused cuda::gae_advantages (default: one block per row here)", ms_fused,
         bytes, "speed-up vs one thread per sequence: " + std::to_string(ms_naive / ms_fused));
  // The same calls captured in a CUDA graph (50 calls per graph, rotating the 4 sets): what is
  // left when the per-launch host and queue overhead is gone.
  const double ms_graph = graph_ms_per_call(
      50, quick ? 2 : 5, [&](int k, cudaStream_t stream) { fused_call({}, k, stream); });
  record("  fused, default shape, 50 calls in a CUDA graph (per call)", ms_graph, bytes);
  // The same calls launched plainly (gae_launch::dependent = false): each grid is scheduled only
  // after the previous one has ended, as before programmatic dependent launch.
  record("  fused, default shape, plain launches (not programmatic dependents)",
         fused_ms({8, 1 << 16, 0, 0, false}), bytes);
  record("  fused, default shape, plain launches, 50 calls in a CUDA graph (per call)",
         graph_ms_per_call(50, quick ? 2 : 5,
                           [&](int k, cudaStream_t stream) {
                             fused_call({8, 1 << 16, 0, 0, false}, k, stream);
                           }),
         bytes);
  record("  fused, default shape, second pass", fused_ms({}), bytes);
  record("  fused, one block per row (cluster 1)", fused_ms({8, 1 << 16, 1}), bytes);
  record("  fused, 2-CTA clusters per row", fused_ms({8, 1 << 16, 2}), bytes);
  record("  fused, one block per row, 50 calls in a CUDA graph (per call)",
         graph_ms_per_call(50, quick ? 2 : 5,
                           [&](int k, cudaStream_t stream) {
                             fused_call({8, 1 << 16, 1}, k, stream);
                           }),
         bytes);
  record("  fused, one block per row (cluster 1), second pass", fused_ms({8, 1 << 16, 1}), bytes);
  record("  fused, 2-CTA clusters per row, second pass", fused_ms({8, 1 << 16, 2}), bytes);
  record("  fused, 4-CTA clusters per row (1024 CTAs: more than fit at once)",
         fused_ms({8, 1 << 16, 4}), bytes);
  record("  fused, 8-CTA clusters per row (4 CTAs of each past the row start)",
         fused_ms({8, 1 << 16, 8}), bytes);
  record("  fused, 256 threads x 16 tokens, cluster 1", fused_ms({16, 1 << 16, 1}), bytes);
  record("  fused, 256 threads x 16 tokens, 2-CTA clusters", fused_ms({16, 1 << 16, 2}), bytes);
  // Where the time goes (a probe, not a GAE): the data path of the fused kernel alone; and a
  // trivial kernel moving the same bytes. Both plain and as programmatic dependents (as the GAE).
  const index_t groups = tokens / 4;
  for (const bool dependent : {false, true}) {
    namespace cd = rlcore::cuda::detail;
    cd::kernel_launch probe{};
    probe.grid = static_cast<unsigned>(2 * n);
    probe.threads = 256;
    probe.dependent = dependent && cd::dependent_launch_supported();
    cd::kernel_launch reference = probe;
    reference.grid = static_cast<unsigned>((groups + 255) / 256);
    const std::string how = dependent ? ", programmatic dependents" : ", plain launches";
    record("  probe (not a GAE): coalesced loads, 2 x 4-token folds, walks, stores; no scan" + how,
           time_ms(
               [&](int k) {
                 const int s = k % set_count;
                 cd::launch_kernel(
                     gae_coalesced_probe, probe, thrust::raw_pointer_cast(r[s].data()),
                     thrust::raw_pointer_cast(v[s].data()), thrust::raw_pointer_cast(mk[s].data()),
                     thrust::raw_pointer_cast(a[s].data()), thrust::raw_pointer_cast(ret[s].data()),
                     t_len, 0.99, 0.95);
               },
               quick ? 5 : 50),
           bytes);
    record("  reference: elementwise kernel moving the same 17 B/token (16-byte accesses)" + how,
           time_ms(
               [&](int k) {
                 const int s = k % set_count;
                 cd::launch_kernel(
                     gae_bytes_reference, reference,
                     reinterpret_cast<const float4*>(thrust::raw_pointer_cast(r[s].data())),
                     reinterpret_cast<const float4*>(thrust::raw_pointer_cast(v[s].data())),
                     reinterpret_cast<const unsigned*>(thrust::raw_pointer_cast(mk[s].data())),
                     reinterpret_cast<float4*>(thrust::raw_pointer_cast(a[s].data())),
                     reinterpret_cast<float4*>(thrust::raw_pointer_cast(ret[s].data())), groups);
               },
               quick ? 5 : 50),
           bytes);
  }
  record("  GAE generic gae_advantages (one reverse_scan_rows)", ms_scan, bytes,
         "speed-up vs one thread per sequence: " + std::to_string(ms_naive / ms_scan));
  record("  GAE one thread per sequence (reference point)", ms_naive, bytes);
  // The cluster size by batch shape (the same 2^21 token slots viewed as rows x cols, cols =
  // 2^21 / rows; 10922 and 5461 are not multiples of 4: the shifted 16-byte path): the measurements
  // behind cuda::detail::gae_auto_cluster. One row per shape, the default's time, the others in
  // the note. padded_ms: one fused call per k on the same slots viewed as rows x cols, launch
  // shape {8, 1 << 16, cluster, access}.
  const auto padded_ms = [&](index_t rows, index_t cols, int cluster, int access,
                             bool dependent = true) {
    auto shaped = [&](auto& x) {
      return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(x.data()), rows, cols);
    };
    return time_ms(
        [&](int k) {
          const int s = k % set_count;
          auto av = shaped(a[s]);
          auto rv = shaped(ret[s]);
          rlcore::cuda::detail::enqueue_gae(rlcore::cuda::padded(shaped(mk[s])), shaped(r[s]),
                                            shaped(v[s]), av, rv, options, ctx,
                                            {8, 1 << 16, cluster, access, dependent});
        },
        quick ? 3 : 20);
  };
  for (const index_t rows : {16, 32, 64, 128, 192, 256, 384, 512, 1024}) {
    const index_t cols = tokens / rows;
    std::string note = "clusters 1 / 2 / 4 / 8:";
    for (const int cluster : {1, 2, 4, 8}) {
      char cell[32];
      std::snprintf(cell, sizeof cell, " %.4f", padded_ms(rows, cols, cluster, 0));
      note += cell;
    }
    record("  shape " + std::to_string(rows) + " x " + std::to_string(cols) + ", default cluster",
           padded_ms(rows, cols, 0, 0), 17.0 * double(rows * cols), note + " ms");
  }
  // Rows at any start (the shifted 16-byte path: aligned float4 / mask-word accesses, the
  // neighbour lane's part by shuffles) against the per-element path (gae_launch::access = 1) and
  // the aligned path, in the same call: padded T % 4 != 0, packed rows of ragged lengths.
  for (const index_t rows : {192, 384}) {
    const index_t cols = tokens / rows;
    record("  shape " + std::to_string(rows) + " x " + std::to_string(cols)
               + ", per-element path (access 1), default cluster",
           padded_ms(rows, cols, 0, 1), 17.0 * double(rows * cols));
  }
  record("  padded 256 x 8191 (rows at every residue mod 4), default (shifted 16-byte)",
         padded_ms(256, 8191, 0, 0), 17.0 * 256 * 8191);
  record("  padded 256 x 8191, shifted, plain launches (not programmatic dependents)",
         padded_ms(256, 8191, 0, 0, false), 17.0 * 256 * 8191);
  record("  padded 256 x 8191, per-element path (access 1)", padded_ms(256, 8191, 0, 1),
         17.0 * 256 * 8191);
  record("  256 x 8192 on the shifted path (access 2: every row at offset 0)",
         padded_ms(256, 8192, 0, 2), bytes);
  record("  256 x 8192, per-element path (access 1)", padded_ms(256, 8192, 0, 1), bytes);
  {
    // Packed (remove-padding) batch: 256 rows of 8192 - (i % 7) 13 tokens, flat buffers.
    std::vector<index_t> offsets{0};
    for (index_t i = 0; i < n; ++i) {
      offsets.push_back(offsets.back() + t_len - (i % 7) * 13);
    }
    const index_t total = offsets.back();
    const thrust::device_vector<index_t> d_offsets(offsets.begin(), offsets.end());
    const auto flat = [&](auto& x) {
      return rlcore::make_vector_view<device_space>(thrust::raw_pointer_cast(x.data()), total);
    };
    using packed_t = decltype(rlcore::cuda::packed(d_offsets, flat(mk[0])));
    std::vector<packed_t> layouts;
    for (int s = 0; s < set_count; ++s) {
      layouts.push_back(rlcore::cuda::packed(d_offsets, flat(mk[s])));
    }
    const auto packed_ms = [&](int access, bool dependent = true) {
      return time_ms(
          [&](int k) {
            const int s = k % set_count;
            auto av = flat(a[s]);
            auto rv = flat(ret[s]);
            rlcore::cuda::detail::enqueue_gae(layouts[s], flat(r[s]), flat(v[s]), av, rv, options,
                                              ctx, {8, 1 << 16, 0, access, dependent});
          },
          quick ? 3 : 20);
    };
    const std::string name =
        "  packed 256 rows of 8192 - (i % 7) x 13 tokens (" + std::to_string(total) + ")";
    record(name + ", default (shifted 16-byte)", packed_ms(0), 17.0 * double(total));
    record(name + ", shifted, plain launches", packed_ms(0, false), 17.0 * double(total));
    record(name + ", per-element path (access 1)", packed_ms(1), 17.0 * double(total));
  }
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

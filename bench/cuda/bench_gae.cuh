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
  const auto fused_ms = [&](const rlcore::cuda::detail::gae_launch& launch) {
    return time_ms(
        [&](int k) {
          const int s = k % set_count;
          auto av = m(a[s]);
          auto rv = m(ret[s]);
          rlcore::cuda::detail::enqueue_gae(rlcore::cuda::padded(m(mk[s])), m(r[s]), m(v[s]), av,
                                            rv, options, ctx, launch);
        },
        quick ? 5 : 50);
  };
  const double ms_fused = fused_ms({});
  record("GAE 256 x 8192, fused cuda::gae_advantages (one composite scan)", ms_fused, bytes,
         "speed-up vs one thread per sequence: " + std::to_string(ms_naive / ms_fused));
  record("  fused, 256 threads x 16 tokens per tile", fused_ms({16}), bytes);
  record("  GAE generic gae_advantages (2 affine scans)", ms_scan, bytes,
         "speed-up vs one thread per sequence: " + std::to_string(ms_naive / ms_scan));
  record("  GAE one thread per sequence (reference point)", ms_naive, bytes);
  // Launch overhead floor: an empty kernel back to back.
  const double ms_empty = time_ms([&](int) { empty_kernel<<<1, 32>>>(); }, quick ? 5 : 50);
  std::printf("  (an empty kernel back to back: %.4f ms per launch)\n", ms_empty);
  results.push_back({"empty kernel launch", ms_empty, 0, 0, ""});
}

} // namespace

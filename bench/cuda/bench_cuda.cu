// CUDA benchmarks of rlcore's device kernels, each reported as a fraction of the time its minimal
// bytes need at the device-to-device copy bandwidth measured in the same run.
//
//   bench_cuda [--json FILE] [--quick]
//
// Timing: CUDA events around `reps` back-to-back calls after warm-up; the median of 5 such
// batches. Inputs larger than L2 or rotated among several sets (each kernel's comment says
// which). Shape legend: N sequences, T tokens, V vocabulary.
#include <rlcore/backend/cuda/advantage.cuh>
#include <rlcore/backend/cuda/cuda.cuh>
#include <rlcore/backend/cuda/logits.cuh>
#include <rlcore/backend/cuda/policy.cuh>

#include <rlcore/advantage/gae.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cuda_bf16.h>
#include <functional>
#include <string>
#include <vector>

using rlcore::device_space;
using rlcore::index_t;

namespace {

#define CHECK_CUDA(call) RLCORE_CUDA_CHECK(call)

/// Median over 5 batches of the mean time (ms) of one call, timed with events.
double time_ms(const std::function<void(int)>& call, int reps, int warmup = 2) {
  for (int k = 0; k < warmup; ++k) {
    call(k);
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  cudaEvent_t start{};
  cudaEvent_t stop{};
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<double> batches;
  int counter = 0;
  for (int b = 0; b < 5; ++b) {
    CHECK_CUDA(cudaEventRecord(start));
    for (int k = 0; k < reps; ++k) {
      call(counter++);
    }
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    batches.push_back(double(ms) / reps);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(batches.begin(), batches.end());
  return batches[2];
}

/// Fills a device buffer with pseudo-random floats in [lo, hi) (a hash of the index).
struct fill_uniform {
  float* out;
  float lo;
  float hi;
  unsigned seed;
  __device__ void operator()(index_t i) const {
    unsigned x = static_cast<unsigned>(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    out[i] = lo + (hi - lo) * (static_cast<float>(x & 0xFFFFFF) / 16777216.0f);
  }
};
struct fill_bf16 {
  __nv_bfloat16* out;
  unsigned seed;
  __device__ void operator()(index_t i) const {
    unsigned x = static_cast<unsigned>(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    out[i] = __float2bfloat16_rn(-6.0f + 12.0f * (static_cast<float>(x & 0xFFFFFF) / 16777216.0f));
  }
};
struct fill_mask {
  std::uint8_t* out;
  index_t cols;
  __device__ void operator()(index_t i) const {
    const index_t t = i % cols;
    const index_t row = i / cols;
    out[i] = (t < cols - (row % 7) * 13 && (t % 29) != 5) ? 1 : 0; // ragged ends, interior holes
  }
};
struct fill_ids {
  int* out;
  index_t vocab;
  __device__ void operator()(index_t i) const {
    out[i] = static_cast<int>((static_cast<unsigned long long>(i) * 7919ull) % vocab);
  }
};

struct result_row {
  std::string name;
  double ms;
  double bytes;
  double floor_ms;
  std::string note;
};

std::vector<result_row> results;
double copy_bandwidth = 0; // bytes / ms (read + write)

void record(const std::string& name, double ms, double bytes, const std::string& note = "") {
  const double floor_ms = bytes / copy_bandwidth;
  results.push_back({name, ms, bytes, floor_ms, note});
  std::printf("%-58s %9.4f ms  floor %9.4f ms  %5.1f%% of copy bandwidth  %s\n", name.c_str(), ms,
              floor_ms, 100.0 * floor_ms / ms, note.c_str());
  std::fflush(stdout);
}

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

/// Launch-overhead reference.
__global__ void empty_kernel() {
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

} // namespace

#include "bench_logits.cuh"

int main(int argc, char** argv) {
  const char* json_path = nullptr;
  const char* only = "";
  bool quick = false;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--json") == 0 && a + 1 < argc) {
      json_path = argv[++a];
    } else if (std::strcmp(argv[a], "--only") == 0 && a + 1 < argc) {
      only = argv[++a];
    } else if (std::strcmp(argv[a], "--quick") == 0) {
      quick = true;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB, %.1f GB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, double(prop.totalGlobalMem) / 1e9);
  rlcore::device_context ctx{};

  // --- copy bandwidth: cudaMemcpy device to device, 2 GiB, bytes read + written ---------------
  {
    const std::size_t bytes = std::size_t{1} << 31;
    void* a = nullptr;
    void* b = nullptr;
    CHECK_CUDA(cudaMalloc(&a, bytes));
    CHECK_CUDA(cudaMalloc(&b, bytes));
    CHECK_CUDA(cudaMemset(a, 1, bytes));
    const double ms = time_ms(
        [&](int) { CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 10);
    copy_bandwidth = 2.0 * double(bytes) / ms;
    std::printf("copy bandwidth (read + write): %.3f TB/s\n", copy_bandwidth / 1e9);
    results.push_back({"copy 2 GiB device to device", ms, 2.0 * double(bytes), ms, ""});
    CHECK_CUDA(cudaFree(a));
    CHECK_CUDA(cudaFree(b));
  }

  const auto wanted = [&](const char* section) { return std::strstr(section, only) != nullptr; };

  // --- fused token objective: GRPO (clip 0.2 + 0.04 k3, seq-mean-token-mean), 2^24 tokens -----
  // lp, old, ref, advantage (fp32) and mask (u8) in, d loss / d lp (fp32) out: 21 bytes/token.
  // Two input sets of 352 MB each (7x L2), alternated.
  if (wanted("objective")) {
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
                                                                     m(sets[0].adv),
                                                                     m(sets[0].ref)},
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
    // Shapes of the tiled kernel (tile_config<threads, float4 groups per thread, min blocks/SM>),
    // with and without the L2 prefetch of each block's next row.
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
    record("  tiled kernel, 256 threads x 2 float4 groups per lane, 2 blocks/SM",
           tiled_ms(tile_config<256, 2, 2>{}, {}), bytes);
    record("  tiled kernel, 128 threads x 1 float4 group per lane, 6 blocks/SM",
           tiled_ms(tile_config<128, 1, 6>{}, {}), bytes);
    const double ms_generic = time_ms(
        [&](int k) {
          auto& s = sets[k % 2];
          (void)rlcore::grpo_objective(layout, m(s.lp), m(s.old), m(s.ref), m(s.adv), g,
                                       rlcore::grpo_options{}, ctx);
        },
        quick ? 3 : 10);
    record("  same, generic rlcore::grpo_objective on the device context", ms_generic, bytes);
  }

  // --- GAE, 256 x 8192 tokens: r, V (fp32), mask (u8) in; A, returns (fp32) out: 17 B/token ----
  // 4 input/output sets of 36 MB (rotated: one set fits in L2).
  if (wanted("gae")) {
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

  // --- logits: bf16 16 x 1024 x 152064 (4.98 GB), bench_logits.cuh -----------------------------
  if (wanted("logits")) {
    bench_logits(ctx, quick);
  }

  if (json_path != nullptr) {
    FILE* f = std::fopen(json_path, "w");
    if (f != nullptr) {
      std::fprintf(f, "{\"device\": \"%s\", \"copy_bandwidth_TBps\": %.4f, \"results\": [\n",
                   prop.name, copy_bandwidth / 1e9);
      for (std::size_t k = 0; k < results.size(); ++k) {
        const auto& r = results[k];
        std::fprintf(f,
                     "  {\"name\": \"%s\", \"ms\": %.6f, \"bytes\": %.0f, \"floor_ms\": %.6f, "
                     "\"fraction_of_copy_bandwidth\": %.4f, \"note\": \"%s\"}%s\n",
                     r.name.c_str(), r.ms, r.bytes, r.floor_ms, r.floor_ms / r.ms, r.note.c_str(),
                     k + 1 < results.size() ? "," : "");
      }
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  return 0;
}

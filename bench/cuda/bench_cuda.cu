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

} // namespace

#include "bench_gae.cuh"
#include "bench_logits.cuh"
#include "bench_objective.cuh"

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

  if (wanted("objective")) {
    bench_objective(ctx, quick);
  }

  if (wanted("gae")) {
    bench_gae(ctx, quick);
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

// The GAE test batch shared by the fused-GAE suites (test_fused.cu, test_gae_chained.cu): a
// padded batch with multi-turn masks, the CPU reference in double and the fused GPU call.
#pragma once

#include "cuda_test_util.cuh"

#include <rlcore/advantage/gae.hpp>
#include <rlcore/backend/cuda/advantage.cuh>

#include <cstdint>
#include <vector>

namespace rlcore_test {

/// A padded rows x cols GAE batch with multi-turn masks (interior holes at rate 1 - keep), plus,
/// when the batch has those rows: row 1 all masked, row 2 one valid token (at cols / 3), row 3 a
/// ragged end (its last 37 tokens masked).
struct gae_batch {
  rlcore::index_t rows;
  rlcore::index_t cols;
  std::vector<std::uint8_t> mask;
  std::vector<float> rewards;
  std::vector<float> values;

  gae_batch(rlcore::index_t n, rlcore::index_t t, unsigned seed, double keep = 0.8)
      : rows(n), cols(t), mask(bernoulli<std::uint8_t>(n * t, keep, seed)),
        rewards(uniform<float>(n * t, -1.0, 1.0, seed + 1)),
        values(uniform<float>(n * t, -2.0, 2.0, seed + 2)) {
    for (rlcore::index_t k = 0; k < t; ++k) {
      if (n > 1) {
        mask[1 * t + k] = 0;
      }
      if (n > 2) {
        mask[2 * t + k] = k == t / 3 ? 1 : 0;
      }
      if (n > 3) {
        mask[3 * t + k] = k < t - 37 ? mask[3 * t + k] : 0;
      }
    }
  }
};

struct gae_outputs {
  std::vector<float> advantages;
  std::vector<float> returns;
};

/// The CPU reference: rlcore::gae_advantages in double on the same fp32 values.
inline void cpu_gae(const gae_batch& b, const rlcore::gae_options& o, std::vector<double>& a,
                    std::vector<double>& ret) {
  const auto r = as_double(b.rewards);
  const auto v = as_double(b.values);
  a.assign(b.rows * b.cols, 0.0);
  ret.assign(b.rows * b.cols, 0.0);
  auto av = rlcore::make_matrix_view(a.data(), b.rows, b.cols);
  auto rv = rlcore::make_matrix_view(ret.data(), b.rows, b.cols);
  rlcore::gae_advantages(rlcore::padded(rlcore::make_matrix_view(b.mask.data(), b.rows, b.cols)),
                         rlcore::make_matrix_view(r.data(), b.rows, b.cols),
                         rlcore::make_matrix_view(v.data(), b.rows, b.cols), av, rv, o);
}

/// The fused GPU GAE of `launch`'s shape on the batch, on `stream` (outputs pre-filled with 9).
inline gae_outputs gpu_gae(const gae_batch& b, const rlcore::gae_options& o,
                           const rlcore::cuda::detail::gae_launch& launch = {},
                           cudaStream_t stream = nullptr) {
  const auto dmask = to_device(b.mask);
  const auto dr = to_device(b.rewards);
  const auto dv = to_device(b.values);
  thrust::device_vector<float> da(b.rows * b.cols, 9.0f);
  thrust::device_vector<float> dret(b.rows * b.cols, 9.0f);
  auto av = dmat(da, b.rows, b.cols);
  auto rv = dmat(dret, b.rows, b.cols);
  const rlcore::device_context c{stream};
  rlcore::cuda::detail::enqueue_gae(rlcore::cuda::padded(dmat(dmask, b.rows, b.cols)),
                                    dmat(dr, b.rows, b.cols), dmat(dv, b.rows, b.cols), av, rv, o,
                                    c, launch);
  RLCORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return {to_host(da), to_host(dret)};
}

/// Every masked slot of the batch holds exactly 0 in both outputs.
inline bool masked_slots_zero(const gae_batch& b, const gae_outputs& out) {
  for (std::size_t k = 0; k < b.mask.size(); ++k) {
    if (b.mask[k] == 0 && (out.advantages[k] != 0.0f || out.returns[k] != 0.0f)) {
      return false;
    }
  }
  return true;
}

} // namespace rlcore_test

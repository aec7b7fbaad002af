// The random per-token objective batch of the CUDA objective tests (test_objective.cu,
// test_fused.cu): rows x cols fp32 log-probs, old / reference log-probs within 0.5 of them,
// advantages, and an 80% mask with row 2 (when it exists) fully masked; masked slots hold
// garbage (inf, NaN) every third slot, which must not leak into any result.
#pragma once

#include "cuda_test_util.cuh"

#include <cstdint>
#include <limits>
#include <vector>

namespace rlcore_test {

struct token_batch {
  rlcore::index_t rows;
  rlcore::index_t cols;
  std::vector<std::uint8_t> mask;
  std::vector<float> lp, old, ref, adv;

  token_batch(rlcore::index_t n, rlcore::index_t t, unsigned seed)
      : rows(n), cols(t), mask(bernoulli<std::uint8_t>(n * t, 0.8, seed)),
        lp(uniform<float>(n * t, -3.0, -0.1, seed + 1)), old(n * t), ref(n * t),
        adv(uniform<float>(n * t, -2.0, 2.0, seed + 2)) {
    const auto d1 = uniform<float>(n * t, -0.5, 0.5, seed + 3);
    const auto d2 = uniform<float>(n * t, -0.5, 0.5, seed + 4);
    for (rlcore::index_t k = 0; k < n * t; ++k) {
      old[k] = lp[k] + d1[k];
      ref[k] = lp[k] + d2[k];
    }
    for (rlcore::index_t k = 0; k < t && n > 2; ++k) {
      mask[2 * t + k] = 0; // an all-masked row
    }
    for (rlcore::index_t k = 0; k < n * t; k += 3) {
      if (mask[k] == 0) {
        lp[k] = std::numeric_limits<float>::infinity();
        old[k] = std::numeric_limits<float>::quiet_NaN();
      }
    }
  }
};

} // namespace rlcore_test

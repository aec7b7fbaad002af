// Uses the installed rlcore::cuda: a device layout over a Thrust mask and the generic GRPO
// advantages on a device context. Compiled by the packaging test (nvcc, C++20 from rlcore::cuda's
// flags); it needs a GPU to run, which the test does not do.
#include <rlcore/backend/cuda/cuda.cuh>
#include <rlcore/rlcore.hpp>

#include <cstdint>
#include <cstdio>
#include <thrust/device_vector.h>

int main() {
  const rlcore::index_t n = 4;
  const rlcore::index_t t = 3;
  thrust::device_vector<std::uint8_t> mask(n * t, 1);
  thrust::device_vector<float> scores(n, 1.0f);
  thrust::device_vector<float> advantages(n * t);
  rlcore::device_context ctx{};
  const auto layout = rlcore::cuda::padded(
      rlcore::make_matrix_view<rlcore::device_space>(thrust::raw_pointer_cast(mask.data()), n, t));
  auto adv = rlcore::make_matrix_view<rlcore::device_space>(
      thrust::raw_pointer_cast(advantages.data()), n, t);
  const auto stats =
      rlcore::grpo_outcome_advantages(layout, scores, rlcore::uniform_groups{2}, adv, {}, ctx);
  std::printf("groups: %lld\n", static_cast<long long>(stats.num_groups));
  return stats.num_groups == 2 ? 0 : 1;
}

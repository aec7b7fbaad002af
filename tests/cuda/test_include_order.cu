// The generic algorithms included BEFORE the CUDA backend: a device group layout must still be
// validated on the device (rlcore::group_validation is a class template specialised by
// backend/cuda/layout.cuh, found at instantiation whatever the include order).
#include <rlcore/advantage/group.hpp>

#include "cuda_test_util.cuh"

#include <cstdint>
#include <vector>

using rlcore::device_space;
using rlcore::index_t;
using namespace rlcore_test;

TEST_CASE("device group offsets are validated on the device whatever the include order") {
  rlcore::device_context ctx{};
  // 4 sequences of 3 tokens, all valid; groups {0, 1}, {2, 3}; scores 1, 3 | 2, 2.
  const index_t rows = 4;
  const index_t cols = 3;
  const auto mask = to_device(std::vector<std::uint8_t>(rows * cols, 1));
  const auto scores = to_device(std::vector<float>{1.0f, 3.0f, 2.0f, 2.0f});
  thrust::device_vector<float> adv(rows * cols, -7.0f);
  const auto layout = rlcore::cuda::padded(
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(mask.data()), rows, cols));
  auto adv_view =
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(adv.data()), rows, cols);

  const auto good = to_device(std::vector<int>{0, 2, 4});
  (void)rlcore::grpo_outcome_advantages(layout, scores, rlcore::cuda::group_offsets(good), adv_view,
                                        {}, ctx);
  // Group {1, 3}: mean 2, unbiased std sqrt(2), so A = -+1/sqrt(2) (eps 1e-6 in the
  // denominator); group {2, 2}: zero spread, A = 0.
  const auto a = to_host(adv);
  for (index_t t = 0; t < cols; ++t) {
    CHECK(a[0 * cols + t] == doctest::Approx(-1.0 / (std::sqrt(2.0) + 1e-6)).epsilon(1e-6));
    CHECK(a[1 * cols + t] == doctest::Approx(1.0 / (std::sqrt(2.0) + 1e-6)).epsilon(1e-6));
    CHECK(a[2 * cols + t] == 0.0f);
    CHECK(a[3 * cols + t] == 0.0f);
  }

  // Offsets that end at 3, not N = 4.
  const auto short_offsets = to_device(std::vector<int>{0, 2, 3});
  check_invalid(
      [&] {
        (void)rlcore::grpo_outcome_advantages(
            layout, scores, rlcore::cuda::group_offsets(short_offsets), adv_view, {}, ctx);
      },
      "groups", "expected the last group offset to equal N = 4, got 3");
}

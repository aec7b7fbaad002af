// Your own tensor type, not Eigen: a minimal "engine tensor" (shape, strides, pointer) plugged
// into rlcore with one trait specialisation, then used for GRPO advantages and the GRPO loss on a
// packed batch (sequences of different lengths concatenated, with offsets).
#include <rlcore/advantage/group.hpp>
#include <rlcore/objective/grpo.hpp>
#include <rlcore/rlcore.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace engine {

/// A 1-D or 2-D float tensor as a training engine might define it: it owns its storage and
/// knows its shape and strides (in elements).
struct tensor {
  std::vector<float> storage;
  std::int64_t shape[2] = {0, 1};
  std::int64_t strides[2] = {1, 1};

  static tensor zeros(std::int64_t n) { return {std::vector<float>(n, 0.0f), {n, 1}, {1, 1}}; }
  static tensor of(std::vector<float> values) {
    const auto n = static_cast<std::int64_t>(values.size());
    return {std::move(values), {n, 1}, {1, 1}};
  }
};

} // namespace engine

// The one thing rlcore needs: how to view an engine::tensor as a (strided) vector or matrix.
template <>
struct rlcore::tensor_traits<engine::tensor> {
  using value_type = float;
  using memory_space = rlcore::host_space;
  static rlcore::vector_view<float> vector(engine::tensor& t) {
    return {t.storage.data(), t.shape[0] * t.shape[1], 1};
  }
  static rlcore::vector_view<const float> vector(const engine::tensor& t) {
    return {t.storage.data(), t.shape[0] * t.shape[1], 1};
  }
  static rlcore::matrix_view<float> matrix(engine::tensor& t) {
    return {t.storage.data(), t.shape[0], t.shape[1], t.strides[0], t.strides[1]};
  }
};

static_assert(rlcore::vector_like<engine::tensor>);
static_assert(rlcore::matrix_like<engine::tensor>);

int main() {
  // 4 responses to one prompt (G = 4) of lengths 3, 1, 4, 2 packed into 10 tokens.
  const std::vector<std::int32_t> offsets{0, 3, 4, 8, 10};
  const auto batch = rlcore::packed(offsets);

  engine::tensor rewards = engine::tensor::of({1.0f, 0.0f, 0.5f, 0.0f});
  engine::tensor advantages = engine::tensor::zeros(10);
  rlcore::grpo_outcome_advantages(batch, rewards, rlcore::uniform_groups{4}, advantages);

  engine::tensor old_lp = engine::tensor::of({-1, -2, -1, -3, -1, -1, -2, -1, -2, -1});
  engine::tensor lp = old_lp;
  lp.storage[0] += 0.3f; // the policy moved on token 0 (ratio e^0.3 = 1.35: clipped, A > 0)
  engine::tensor ref_lp = old_lp;
  engine::tensor grad = engine::tensor::zeros(10);
  const auto result = rlcore::grpo_objective(batch, lp, old_lp, ref_lp, advantages, grad);

  std::printf("token advantages:");
  for (float a : advantages.storage) {
    std::printf(" %+.3f", a);
  }
  std::printf("\nGRPO loss %.6f, clip fraction %.3f\nd loss / d log_probs:", result.loss,
              result.metrics.clip_fraction);
  for (float g : grad.storage) {
    std::printf(" %+.4f", g);
  }
  std::printf("\n");
  return 0;
}

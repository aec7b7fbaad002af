// Quick start: one GRPO step's maths on an Eigen batch.
//
//   N = 8 responses (2 prompts x G = 4), T = 6 token slots, mask marks the response tokens.
//   1. outcome rewards -> GRPO advantages (group-normalised, broadcast to tokens)
//   2. log-probs (current, behaviour, reference) -> DeepSeekMath GRPO loss and d loss / d log_probs
#include <rlcore/advantage/group.hpp>
#include <rlcore/backend/eigen/eigen.hpp>
#include <rlcore/objective/grpo.hpp>
#include <rlcore/rlcore.hpp>

#include <Eigen/Core>

#include <cstdio>

int main() {
  constexpr int N = 8, T = 6, G = 4;
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  // Response lengths 1..6 tokens; the mask is 1 on the response, 0 on the padding.
  Matrix mask = Matrix::Zero(N, T);
  for (int i = 0; i < N; ++i) {
    mask.row(i).head(1 + i % T).setOnes();
  }
  // Outcome rewards: 1 for a correct answer. Prompt 0: 2 of 4 correct; prompt 1: 1 of 4.
  Eigen::VectorXd rewards(N);
  rewards << 1, 0, 1, 0, 0, 0, 0, 1;

  const auto batch = rlcore::padded(mask);
  Matrix advantages(N, T);
  const auto stats =
      rlcore::grpo_outcome_advantages(batch, rewards, rlcore::uniform_groups{G}, advantages);

  // Log-probs of the sampled tokens under the current, behaviour and reference policies.
  Matrix old_log_probs = Matrix::Constant(N, T, -1.0);
  Matrix log_probs = old_log_probs.array() + 0.05 * Matrix::Random(N, T).array();
  Matrix ref_log_probs = old_log_probs.array() - 0.1;
  Matrix grad(N, T);
  const auto result = rlcore::grpo_objective(batch, log_probs, old_log_probs, ref_log_probs,
                                             advantages, grad); // eps 0.2, beta 0.04, k3

  std::printf("GRPO advantages per response (token 0):");
  for (int i = 0; i < N; ++i) {
    std::printf(" %+.3f", advantages(i, 0));
  }
  std::printf("\nzero-spread groups: %.2f\n", stats.zero_spread_fraction);
  std::printf("loss %.6f  (policy %.6f, KL %.6f)  clip fraction %.3f  approx KL %.2e\n",
              result.loss, result.metrics.policy_loss, result.metrics.kl_loss,
              result.metrics.clip_fraction, result.metrics.approx_kl);
  std::printf("d loss / d log_probs, response 0: ");
  for (int t = 0; t < T; ++t) {
    std::printf(" %+.4f", grad(0, t));
  }
  std::printf("\n");
  return 0;
}

// Aggregation modes (objective/aggregate.hpp): resolved weights, local vs global counts, and
// micro-batch invariance of the value loss and the KL penalty loss (1, 2, 3 parts, 1e-12).
#include "objective_test_util.hpp"

#include <rlcore/objective/kl_penalty.hpp>
#include <rlcore/objective/value_loss.hpp>

using rlcore::aggregation;
using rlcore::aggregation_options;
using rlcore::index_t;

TEST_CASE("resolved weights of every mode (hand values)") {
  // 5 valid tokens, N = 2 rows, L = 4
  auto w = [](aggregation mode, double global_tokens = -1, double global_sequences = -1) {
    aggregation_options o;
    o.mode = mode;
    o.global_tokens = global_tokens;
    o.global_sequences = global_sequences;
    o.length_normalizer = 4;
    return rlcore::detail::resolve_aggregation(o, 2, 5.0);
  };
  CHECK(w(aggregation::token_mean).row_weight(3) == doctest::Approx(0.2));
  CHECK(w(aggregation::token_mean, 20).row_weight(3) == doctest::Approx(0.05));
  CHECK(w(aggregation::token_sum).row_weight(3) == 1.0);
  CHECK(w(aggregation::seq_mean_token_sum).row_weight(3) == doctest::Approx(0.5));
  CHECK(w(aggregation::seq_mean_token_sum, -1, 8).row_weight(3) == doctest::Approx(0.125));
  CHECK(w(aggregation::seq_mean_token_mean).row_weight(3) == doctest::Approx(1.0 / 6));
  CHECK(w(aggregation::seq_mean_token_mean).row_weight(0) == 0.0); // empty row contributes 0
  CHECK(w(aggregation::seq_mean_token_sum_norm).row_weight(3) == doctest::Approx(1.0 / 8));
  // no valid token at all: token_mean weight 0, not inf
  aggregation_options o;
  CHECK(rlcore::detail::resolve_aggregation(o, 2, 0.0).row_weight(1) == 0.0);
}

TEST_CASE("valid-token count: padded with/without mask, packed with/without mask") {
  std::vector<float> mask{1, 0, 1, 1, 0, 0};
  CHECK(rlcore::detail::count_valid_tokens(
            rlcore::padded(rlcore::make_matrix_view(mask.data(), 2, 3)), rlcore::host_context{})
        == 3);
  CHECK(rlcore::detail::count_valid_tokens(rlcore::padded_unmasked(2, 3), rlcore::host_context{})
        == 6);
  std::vector<int> offsets{0, 4, 6};
  CHECK(rlcore::detail::count_valid_tokens(rlcore::packed(offsets, mask), rlcore::host_context{})
        == 3);
  CHECK(rlcore::detail::count_valid_tokens(rlcore::packed(offsets), rlcore::host_context{}) == 6);
}

namespace {

// Micro-batch invariance of a loss over rows: parts run with the global counts.
template <class Run>
void check_invariance(const rlcore_test::policy_batch& b, aggregation_options agg, Run&& run) {
  double valid = 0;
  for (double m : b.mask) {
    valid += m;
  }
  agg.global_tokens = valid;
  agg.global_sequences = double(b.rows);
  std::vector<double> whole_grad(b.mask.size());
  const double whole = run(b, 0, b.rows, agg, whole_grad.data());
  for (index_t parts : {1, 2, 3}) {
    std::vector<double> grad(b.mask.size(), -9);
    double sum = 0;
    const index_t step = b.rows / parts;
    for (index_t p = 0; p < parts; ++p) {
      sum += run(b, p * step, (p + 1) * step, agg, grad.data() + p * step * b.cols);
    }
    INFO("mode ", static_cast<int>(agg.mode), " parts ", parts);
    CHECK(std::abs(sum - whole) <= 1e-12);
    for (std::size_t k = 0; k < grad.size(); ++k) {
      CHECK(std::abs(grad[k] - whole_grad[k]) <= 1e-12);
    }
  }
}

const aggregation all_modes[] = {aggregation::token_mean, aggregation::token_sum,
                                 aggregation::seq_mean_token_sum, aggregation::seq_mean_token_mean,
                                 aggregation::seq_mean_token_sum_norm};

} // namespace

TEST_CASE("micro-batch invariance: value loss and KL penalty loss") {
  const auto b = rlcore_test::random_batch(6, 5, 1212);
  for (aggregation mode : all_modes) {
    aggregation_options agg;
    agg.mode = mode;
    agg.length_normalizer = 5;
    auto sub = [](const rlcore_test::policy_batch& x, const std::vector<double>& v, index_t begin,
                  index_t end) {
      return rlcore::make_matrix_view(v.data() + begin * x.cols, end - begin, x.cols);
    };
    check_invariance(
        b, agg,
        [&](const auto& x, index_t begin, index_t end, const aggregation_options& a, double* grad) {
          rlcore::value_loss_options o;
          o.clip = 0.1;
          o.aggregation = a;
          return rlcore::value_loss(
                     rlcore::padded(sub(x, x.mask, begin, end)), sub(x, x.log_probs, begin, end),
                     sub(x, x.old_log_probs, begin, end), sub(x, x.ref_log_probs, begin, end),
                     rlcore::make_matrix_view(grad, end - begin, x.cols), o)
              .loss;
        });
    check_invariance(
        b, agg,
        [&](const auto& x, index_t begin, index_t end, const aggregation_options& a, double* grad) {
          rlcore::kl_penalty_options o;
          o.aggregation = a;
          return rlcore::kl_penalty_loss(rlcore::padded(sub(x, x.mask, begin, end)),
                                         sub(x, x.log_probs, begin, end),
                                         sub(x, x.ref_log_probs, begin, end),
                                         rlcore::make_matrix_view(grad, end - begin, x.cols), o)
              .loss;
        });
  }
}

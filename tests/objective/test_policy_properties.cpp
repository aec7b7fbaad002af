// Properties of policy_objective: micro-batch invariance with global counts, padded == packed,
// float vs double, extreme and degenerate inputs, determinism.
#include "objective_test_util.hpp"

#include <rlcore/objective/grpo.hpp>

#include <cmath>
#include <limits>

using rlcore::aggregation;
using rlcore::index_t;
using rlcore::policy_loss;
using rlcore::policy_options;
using rlcore_test::policy_batch;
using rlcore_test::run_policy;

namespace {

// Rows [begin, end) of a padded batch.
policy_batch slice_rows(const policy_batch& b, index_t begin, index_t end) {
  policy_batch s;
  s.rows = end - begin;
  s.cols = b.cols;
  auto cut = [&](const std::vector<double>& x) {
    return std::vector<double>(x.begin() + begin * b.cols, x.begin() + end * b.cols);
  };
  s.mask = cut(b.mask);
  s.log_probs = cut(b.log_probs);
  s.old_log_probs = cut(b.old_log_probs);
  s.advantages = cut(b.advantages);
  s.ref_log_probs = cut(b.ref_log_probs);
  s.entropy = cut(b.entropy);
  s.rollout_log_probs = cut(b.rollout_log_probs);
  return s;
}

double count_valid(const policy_batch& b) {
  double n = 0;
  for (double m : b.mask) {
    n += m != 0 ? 1 : 0;
  }
  return n;
}

const aggregation all_modes[] = {aggregation::token_mean, aggregation::token_sum,
                                 aggregation::seq_mean_token_sum, aggregation::seq_mean_token_mean,
                                 aggregation::seq_mean_token_sum_norm};

} // namespace

TEST_CASE("micro-batch invariance: 1, 2 and 3 parts with global counts sum to the whole batch") {
  const auto b = rlcore_test::random_batch(6, 7, 606);
  for (policy_loss loss : {policy_loss::clipped, policy_loss::gspo, policy_loss::gmpo,
                           policy_loss::cispo, policy_loss::sapo, policy_loss::reinforce}) {
    for (aggregation mode : all_modes) {
      policy_options o;
      o.loss = loss;
      o.kl_beta = 0.1;
      o.entropy_coef = 0.02;
      o.importance.level = rlcore::importance_level::sequence;
      o.aggregation.mode = mode;
      o.aggregation.length_normalizer = 9;
      o.aggregation.global_tokens = count_valid(b);
      o.aggregation.global_sequences = double(b.rows);
      const auto whole = run_policy(b, o);
      for (index_t parts : {1, 2, 3}) {
        double loss_sum = 0;
        std::vector<double> grad;
        std::vector<double> grad_entropy;
        const index_t step = b.rows / parts;
        for (index_t p = 0; p < parts; ++p) {
          const auto r = run_policy(slice_rows(b, p * step, (p + 1) * step), o);
          loss_sum += r.loss;
          grad.insert(grad.end(), r.grad.begin(), r.grad.end());
          grad_entropy.insert(grad_entropy.end(), r.grad_entropy.begin(), r.grad_entropy.end());
        }
        INFO("loss ", static_cast<int>(loss), " mode ", static_cast<int>(mode), " parts ", parts);
        CHECK(std::abs(loss_sum - whole.loss) <= 1e-12);
        for (std::size_t k = 0; k < grad.size(); ++k) {
          CHECK(std::abs(grad[k] - whole.grad[k]) <= 1e-12);
          CHECK(std::abs(grad_entropy[k] - whole.grad_entropy[k]) <= 1e-12);
        }
      }
    }
  }
}

TEST_CASE("padded and packed layouts give identical results (ragged rows, interior holes)") {
  // Packed: rows of lengths 3, 0, 5, 2 with a flat mask; padded: 4 x 5, the same tokens
  // left-aligned, padding masked.
  const std::vector<index_t> offsets{0, 3, 3, 8, 10};
  const std::vector<double> flat_mask{1, 0, 1, 1, 1, 1, 0, 1, 1, 1};
  const auto src = rlcore_test::random_batch(1, 10, 707);
  const index_t rows = 4;
  const index_t cols = 5;
  policy_batch padded;
  padded.rows = rows;
  padded.cols = cols;
  const double junk = std::numeric_limits<double>::quiet_NaN();
  for (auto* v : {&padded.mask, &padded.log_probs, &padded.old_log_probs, &padded.advantages,
                  &padded.ref_log_probs, &padded.entropy, &padded.rollout_log_probs}) {
    v->assign(static_cast<std::size_t>(rows * cols), junk);
  }
  std::fill(padded.mask.begin(), padded.mask.end(), 0.0);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t t = 0; t < offsets[i + 1] - offsets[i]; ++t) {
      const auto f = static_cast<std::size_t>(offsets[i] + t);
      const auto p = static_cast<std::size_t>(i * cols + t);
      padded.mask[p] = flat_mask[f];
      padded.log_probs[p] = src.log_probs[f];
      padded.old_log_probs[p] = src.old_log_probs[f];
      padded.advantages[p] = src.advantages[f];
      padded.ref_log_probs[p] = src.ref_log_probs[f];
      padded.entropy[p] = src.entropy[f];
      padded.rollout_log_probs[p] = src.rollout_log_probs[f];
    }
  }
  auto layout = rlcore::packed(offsets, flat_mask);
  for (policy_loss loss : {policy_loss::clipped, policy_loss::gspo, policy_loss::gmpo,
                           policy_loss::cispo, policy_loss::sapo, policy_loss::reinforce}) {
    for (aggregation mode : all_modes) {
      policy_options o;
      o.loss = loss;
      o.kl_beta = 0.1;
      o.entropy_coef = 0.02;
      o.entropy_top_fraction = 0.7;
      o.importance.level = rlcore::importance_level::token;
      o.aggregation.mode = mode;
      o.aggregation.length_normalizer = 5;
      const auto expected = run_policy(padded, o);
      std::vector<double> grad(10, -9), grad_entropy(10, -9);
      const auto r = rlcore::policy_objective(
          layout,
          rlcore::policy_inputs{.log_probs = src.log_probs,
                                .old_log_probs = src.old_log_probs,
                                .advantages = src.advantages,
                                .ref_log_probs = src.ref_log_probs,
                                .entropy = src.entropy,
                                .rollout_log_probs = src.rollout_log_probs},
          grad, grad_entropy, o);
      INFO("loss ", static_cast<int>(loss), " mode ", static_cast<int>(mode));
      CHECK(r.loss == doctest::Approx(expected.loss).epsilon(1e-14));
      CHECK(r.metrics.clip_fraction == doctest::Approx(expected.metrics.clip_fraction));
      CHECK(r.metrics.valid_tokens == expected.metrics.valid_tokens);
      for (index_t i = 0; i < rows; ++i) {
        for (index_t t = 0; t < offsets[i + 1] - offsets[i]; ++t) {
          const auto f = static_cast<std::size_t>(offsets[i] + t);
          const auto p = static_cast<std::size_t>(i * cols + t);
          CHECK(grad[f] == doctest::Approx(expected.grad[p]).epsilon(1e-14));
          CHECK(grad_entropy[f] == doctest::Approx(expected.grad_entropy[p]).epsilon(1e-14));
        }
      }
    }
  }
}

TEST_CASE("float and double agree to float precision") {
  const auto b = rlcore_test::random_batch(5, 8, 808);
  auto to_float = [](const std::vector<double>& x) {
    return std::vector<float>(x.begin(), x.end());
  };
  const auto mask = to_float(b.mask), lp = to_float(b.log_probs), old = to_float(b.old_log_probs),
             adv = to_float(b.advantages), ref = to_float(b.ref_log_probs),
             ent = to_float(b.entropy), roll = to_float(b.rollout_log_probs);
  auto fv = [&](const std::vector<float>& x) { return rlcore::make_matrix_view(x.data(), 5, 8); };
  for (policy_loss loss : {policy_loss::clipped, policy_loss::gspo, policy_loss::gmpo,
                           policy_loss::cispo, policy_loss::sapo, policy_loss::reinforce}) {
    policy_options o;
    o.loss = loss;
    o.kl_beta = 0.1;
    o.entropy_coef = 0.02;
    o.aggregation.mode = aggregation::seq_mean_token_mean;
    // round the double inputs through float so both precisions see the same numbers
    policy_batch bd = b;
    for (auto* v : {&bd.log_probs, &bd.old_log_probs, &bd.advantages, &bd.ref_log_probs,
                    &bd.entropy, &bd.rollout_log_probs}) {
      for (double& x : *v) {
        x = double(float(x));
      }
    }
    const auto expected = run_policy(bd, o);
    std::vector<float> grad(40), grad_entropy(40);
    const auto r = rlcore::policy_objective(rlcore::padded(fv(mask)),
                                            rlcore::policy_inputs{.log_probs = fv(lp),
                                                                  .old_log_probs = fv(old),
                                                                  .advantages = fv(adv),
                                                                  .ref_log_probs = fv(ref),
                                                                  .entropy = fv(ent),
                                                                  .rollout_log_probs = fv(roll)},
                                            rlcore::make_matrix_view(grad.data(), 5, 8),
                                            rlcore::make_matrix_view(grad_entropy.data(), 5, 8), o);
    INFO("loss ", static_cast<int>(loss));
    CHECK(r.loss == doctest::Approx(expected.loss).epsilon(1e-5));
    for (std::size_t k = 0; k < grad.size(); ++k) {
      CHECK(double(grad[k]) == doctest::Approx(expected.grad[k]).epsilon(1e-5).scale(1e-3));
      CHECK(double(grad_entropy[k]) == doctest::Approx(expected.grad_entropy[k]).epsilon(1e-6));
    }
  }
}

TEST_CASE("extreme log-ratios (+-1e4), every form and estimator: finite loss and gradients") {
  policy_batch b;
  b.rows = 2;
  b.cols = 2;
  b.mask = {1, 1, 1, 1};
  b.log_probs = {0, -1e4, -1e4, 0};
  b.old_log_probs = {-1e4, 0, 0, -1e4};
  b.ref_log_probs = {-1e4, 0, 0, -1e4};
  b.rollout_log_probs = {0, -1e4, -1e4, 0};
  b.advantages = {1e3, -1e3, 1e3, -1e3};
  b.entropy = {1, 2, 3, 4};
  for (policy_loss loss : {policy_loss::clipped, policy_loss::gspo, policy_loss::gmpo,
                           policy_loss::cispo, policy_loss::sapo, policy_loss::reinforce}) {
    for (auto e : {rlcore::kl_estimator::k1, rlcore::kl_estimator::abs, rlcore::kl_estimator::k2,
                   rlcore::kl_estimator::k3, rlcore::kl_estimator::k1_plus,
                   rlcore::kl_estimator::k3_plus, rlcore::kl_estimator::k3_importance}) {
      for (auto level : {rlcore::importance_level::token, rlcore::importance_level::sequence}) {
        policy_options o;
        o.loss = loss;
        o.kl = e;
        o.kl_beta = 1;
        o.entropy_coef = 0.1;
        o.dual_clip = 3;
        o.importance.level = level;
        const auto r = run_policy(b, o);
        INFO("loss ", static_cast<int>(loss), " kl ", rlcore::to_string(e));
        CHECK(std::isfinite(r.loss));
        CHECK(rlcore_test::all_finite(r.grad));
        CHECK(rlcore_test::all_finite(r.grad_entropy));
      }
    }
  }
}

TEST_CASE("float inputs with extreme log-ratios stay finite") {
  std::vector<float> lp{0, -1e4f}, old{-1e4f, 0}, adv{1e3f, -1e3f}, ref{-1e4f, 0}, grad(2);
  std::vector<int> offsets{0, 2};
  for (policy_loss loss : {policy_loss::clipped, policy_loss::sapo, policy_loss::gmpo}) {
    policy_options o;
    o.loss = loss;
    o.kl_beta = 1;
    const auto r = rlcore::policy_objective(
        rlcore::packed(offsets),
        rlcore::policy_inputs{
            .log_probs = lp, .old_log_probs = old, .advantages = adv, .ref_log_probs = ref},
        grad, rlcore::none, o);
    CHECK(std::isfinite(r.loss));
    CHECK(std::isfinite(grad[0]));
    CHECK(std::isfinite(grad[1]));
  }
}

TEST_CASE("all-masked batch, all-masked rows and N = 1: defined, finite results") {
  auto b = rlcore_test::random_batch(3, 4, 909);
  std::fill(b.mask.begin(), b.mask.end(), 0.0);
  b.log_probs[0] = std::numeric_limits<double>::infinity();
  b.advantages[1] = std::numeric_limits<double>::quiet_NaN();
  for (aggregation mode : all_modes) {
    for (policy_loss loss : {policy_loss::clipped, policy_loss::gspo, policy_loss::gmpo}) {
      policy_options o;
      o.loss = loss;
      o.aggregation.mode = mode;
      o.aggregation.length_normalizer = 4;
      o.entropy_top_fraction = 0.5;
      o.importance.level = rlcore::importance_level::sequence;
      const auto r = run_policy(b, o);
      CHECK(r.loss == 0.0);
      CHECK(r.metrics.valid_tokens == 0);
      CHECK(r.metrics.advantage_std == 0);
      for (std::size_t k = 0; k < r.grad.size(); ++k) {
        CHECK(r.grad[k] == 0.0);
        CHECK(r.grad_entropy[k] == 0.0);
      }
    }
  }
  // N = 1, T = 1, through grpo_objective: ratio 1, k3 = 0 -> loss -A, gradient -A
  std::vector<double> one_lp{-0.7}, one_adv{0.5}, one_grad{9};
  std::vector<int> offsets{0, 1};
  const auto r =
      rlcore::grpo_objective(rlcore::packed(offsets), one_lp, one_lp, one_lp, one_adv, one_grad);
  CHECK(r.loss == doctest::Approx(-0.5));
  CHECK(one_grad[0] == doctest::Approx(-0.5));
  // empty batch (N = 0)
  std::vector<int> no_rows{0};
  std::vector<double> empty;
  const auto e = rlcore::grpo_objective(rlcore::packed(no_rows), empty, empty, empty, empty, empty);
  CHECK(e.loss == 0.0);
}

TEST_CASE("deterministic: the same call twice gives the same bits") {
  const auto b = rlcore_test::random_batch(6, 9, 1001);
  policy_options o;
  o.loss = policy_loss::gmpo;
  o.kl_beta = 0.1;
  o.aggregation.mode = aggregation::seq_mean_token_mean;
  const auto r1 = run_policy(b, o);
  const auto r2 = run_policy(b, o);
  CHECK(r1.loss == r2.loss);
  CHECK(r1.grad == r2.grad);
}

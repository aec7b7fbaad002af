// Validation of policy_objective: one check per rule, each naming the argument and the expected
// vs actual value.
#include "objective_test_util.hpp"

#include <rlcore/objective/grpo.hpp>

#include <cmath>
#include <functional>
#include <limits>

using rlcore::policy_options;
using rlcore_test::check_invalid;

namespace {

struct fixture {
  std::vector<double> mask{1, 1, 0, 1, 1, 1};
  std::vector<double> lp{-1, -1, -1, -1, -1, -1};
  std::vector<double> grad = std::vector<double>(6);
  std::vector<double> wrong = std::vector<double>(8);
  rlcore::matrix_view<const double> view(const std::vector<double>& x) const {
    return rlcore::make_matrix_view(x.data(), 2, 3);
  }
  rlcore::padded_layout<double> layout() const { return rlcore::padded(view(mask)); }

  // Full-input call with the given options.
  void call(const policy_options& o) {
    (void)rlcore::policy_objective(layout(),
                                   rlcore::policy_inputs{.log_probs = view(lp),
                                                         .old_log_probs = view(lp),
                                                         .advantages = view(lp),
                                                         .ref_log_probs = view(lp),
                                                         .entropy = view(lp),
                                                         .rollout_log_probs = view(lp)},
                                   rlcore::make_matrix_view(grad.data(), 2, 3), rlcore::none, o);
  }
  // Minimal call (no optional inputs).
  void call_minimal(const policy_options& o) {
    (void)rlcore::policy_objective(layout(), view(lp), view(lp), view(lp),
                                   rlcore::make_matrix_view(grad.data(), 2, 3), o);
  }
};

policy_options with(const std::function<void(policy_options&)>& set) {
  policy_options o;
  set(o);
  return o;
}

} // namespace

TEST_CASE("policy_objective: shape mismatches name the tensor") {
  fixture f;
  auto bad = rlcore::make_matrix_view(f.wrong.data(), 2, 4);
  check_invalid(
      [&] {
        (void)rlcore::policy_objective(f.layout(), bad, f.view(f.lp), f.view(f.lp),
                                       rlcore::make_matrix_view(f.grad.data(), 2, 3));
      },
      "log_probs", "expected shape (2, 3) to match the mask, got (2, 4)");
  check_invalid(
      [&] {
        (void)rlcore::policy_objective(f.layout(), f.view(f.lp), f.view(f.lp), bad,
                                       rlcore::make_matrix_view(f.grad.data(), 2, 3));
      },
      "advantages", "got (2, 4)");
  check_invalid(
      [&] {
        (void)rlcore::policy_objective(f.layout(), f.view(f.lp), f.view(f.lp), f.view(f.lp), bad);
      },
      "grad_log_probs_out", "got (2, 4)");
  check_invalid(
      [&] {
        (void)rlcore::policy_objective(f.layout(),
                                       rlcore::policy_inputs{.log_probs = f.view(f.lp),
                                                             .old_log_probs = f.view(f.lp),
                                                             .advantages = f.view(f.lp),
                                                             .entropy = bad},
                                       rlcore::make_matrix_view(f.grad.data(), 2, 3), rlcore::none);
      },
      "entropy", "got (2, 4)");
  std::vector<int> offsets{0, 2, 5};
  std::vector<double> four(4), five(5), g(5);
  check_invalid(
      [&] { (void)rlcore::policy_objective(rlcore::packed(offsets), five, four, five, g); },
      "old_log_probs", "expected 5 packed tokens (offsets[N]), got 4");
}

TEST_CASE("policy_objective: clip options") {
  fixture f;
  check_invalid([&] { f.call(with([](auto& o) { o.eps_low = -0.1; })); }, "options.eps_low",
                "expected 0 <= eps_low <= 1, got -0.1");
  check_invalid([&] { f.call(with([](auto& o) { o.eps_low = 1.5; })); }, "options.eps_low",
                "got 1.5");
  check_invalid([&] { f.call(with([](auto& o) { o.eps_high = -0.2; })); }, "options.eps_high",
                "expected finite eps_high >= 0, got -0.2");
  check_invalid([&] { f.call(with([](auto& o) { o.dual_clip = 0.5; })); }, "options.dual_clip",
                "expected 0 (off) or a constant > 1, got 0.5");
  check_invalid([&] { f.call(with([](auto& o) { o.delta_clip = 1; })); }, "options.delta_clip",
                "got 1");
  check_invalid([&] { f.call(with([](auto& o) { o.gspo_eps_low = -1; })); }, "options.gspo_eps_low",
                "got -1");
  check_invalid([&] { f.call(with([](auto& o) { o.gspo_eps_high = -1; })); },
                "options.gspo_eps_high", "got -1");
  check_invalid([&] { f.call(with([](auto& o) { o.gmpo_eps_low = -1; })); }, "options.gmpo_eps_low",
                "got -1");
  check_invalid([&] { f.call(with([](auto& o) { o.gmpo_eps_high = std::nan(""); })); },
                "options.gmpo_eps_high", "got nan");
  check_invalid([&] { f.call(with([](auto& o) { o.sapo_tau_pos = 0; })); }, "options.sapo_tau_pos",
                "expected finite tau > 0, got 0");
  check_invalid([&] { f.call(with([](auto& o) { o.sapo_tau_neg = -1; })); }, "options.sapo_tau_neg",
                "got -1");
  check_invalid([&] { f.call(with([](auto& o) { o.log_ratio_clamp = 0; })); },
                "options.log_ratio_clamp", "got 0");
  check_invalid([&] { f.call(with([](auto& o) { o.log_ratio_clamp = 100; })); },
                "options.log_ratio_clamp", "got 100");
  check_invalid(
      [&] { f.call(with([](auto& o) { o.loss = static_cast<rlcore::policy_loss>(17); })); },
      "options.loss", "expected an rlcore::policy_loss value, got 17");
}

TEST_CASE("policy_objective: KL and entropy options, and the inputs they need") {
  fixture f;
  check_invalid([&] { f.call(with([](auto& o) { o.kl_beta = -0.1; })); }, "options.kl_beta",
                "expected finite beta >= 0, got -0.1");
  check_invalid([&] { f.call(with([](auto& o) { o.kl = static_cast<rlcore::kl_estimator>(9); })); },
                "options.kl", "got 9");
  check_invalid(
      [&] {
        f.call(with([](auto& o) {
          o.kl_output_clamp = true;
          o.kl_output_min = 1;
          o.kl_output_max = -1;
        }));
      },
      "options.kl_output_min", "expected kl_output_min <= kl_output_max, got 1 > -1");
  check_invalid([&] { f.call_minimal(with([](auto& o) { o.kl_beta = 0.04; })); }, "ref_log_probs",
                "expected ref_log_probs when kl_beta > 0 (got none, kl_beta = 0.04)");
  check_invalid([&] { f.call(with([](auto& o) { o.entropy_coef = std::nan(""); })); },
                "options.entropy_coef", "expected a finite coefficient");
  check_invalid([&] { f.call_minimal(with([](auto& o) { o.entropy_coef = 0.01; })); }, "entropy",
                "expected entropy when entropy_coef != 0");
  check_invalid([&] { f.call(with([](auto& o) { o.entropy_top_fraction = 0; })); },
                "options.entropy_top_fraction", "expected 0 < fraction <= 1, got 0");
  check_invalid([&] { f.call(with([](auto& o) { o.entropy_top_fraction = 1.5; })); },
                "options.entropy_top_fraction", "got 1.5");
  check_invalid([&] { f.call_minimal(with([](auto& o) { o.entropy_top_fraction = 0.2; })); },
                "entropy", "expected entropy when entropy_top_fraction < 1");
  check_invalid(
      [&] {
        (void)rlcore::policy_objective(f.layout(),
                                       rlcore::policy_inputs{.log_probs = f.view(f.lp),
                                                             .old_log_probs = f.view(f.lp),
                                                             .advantages = f.view(f.lp)},
                                       rlcore::make_matrix_view(f.grad.data(), 2, 3),
                                       rlcore::make_matrix_view(f.wrong.data(), 2, 3));
      },
      "grad_entropy_out", "expected no grad_entropy_out without an entropy input");
}

TEST_CASE("policy_objective: importance correction options") {
  fixture f;
  check_invalid(
      [&] {
        f.call_minimal(with([](auto& o) { o.importance.level = rlcore::importance_level::token; }));
      },
      "rollout_log_probs", "expected rollout_log_probs when importance.level != none");
  check_invalid(
      [&] {
        f.call(
            with([](auto& o) { o.importance.level = static_cast<rlcore::importance_level>(5); }));
      },
      "options.importance.level", "got 5");
  check_invalid([&] { f.call(with([](auto& o) { o.importance.cap = 0; })); },
                "options.importance.cap", "expected cap > 0, got 0");
  check_invalid([&] { f.call(with([](auto& o) { o.importance.low = -1; })); },
                "options.importance.low", "expected low >= 0, got -1");
  check_invalid(
      [&] {
        f.call(with([](auto& o) {
          o.importance.low = 2;
          o.importance.high = 1;
        }));
      },
      "options.importance.high", "expected high >= low = 2, got 1");
}

TEST_CASE("policy_objective: aggregation counts") {
  fixture f; // 5 valid tokens, 2 rows
  using rlcore::aggregation;
  check_invalid([&] { f.call(with([](auto& o) { o.aggregation.global_tokens = -2; })); },
                "aggregation.global_tokens",
                "expected -1 (the local count) or a count >= 0, got -2");
  check_invalid([&] { f.call(with([](auto& o) { o.aggregation.global_tokens = 4; })); },
                "aggregation.global_tokens",
                "expected a count >= the local number of valid tokens 5, got 4");
  check_invalid(
      [&] {
        f.call(with([](auto& o) {
          o.aggregation.mode = aggregation::seq_mean_token_mean;
          o.aggregation.global_sequences = 1;
        }));
      },
      "aggregation.global_sequences",
      "expected -1 (the local count) or a count >= the local number of sequences 2, got 1");
  check_invalid(
      [&] {
        f.call(with([](auto& o) { o.aggregation.mode = aggregation::seq_mean_token_sum_norm; }));
      },
      "aggregation.length_normalizer",
      "expected the Dr. GRPO constant L > 0 for seq_mean_token_sum_norm, got 0");
  check_invalid(
      [&] { f.call(with([](auto& o) { o.aggregation.mode = static_cast<aggregation>(8); })); },
      "aggregation.mode", "expected an rlcore::aggregation value, got 8");
}

TEST_CASE("grpo_objective: its options are validated as policy options") {
  fixture f;
  rlcore::grpo_options g;
  g.beta = -1;
  check_invalid(
      [&] {
        (void)rlcore::grpo_objective(f.layout(), f.view(f.lp), f.view(f.lp), f.view(f.lp),
                                     f.view(f.lp), rlcore::make_matrix_view(f.grad.data(), 2, 3),
                                     g);
      },
      "options.kl_beta", "got -1");
  g.beta = 0.04;
  g.eps = 2;
  check_invalid(
      [&] {
        (void)rlcore::grpo_objective(f.layout(), f.view(f.lp), f.view(f.lp), f.view(f.lp),
                                     f.view(f.lp), rlcore::make_matrix_view(f.grad.data(), 2, 3),
                                     g);
      },
      "options.eps_low", "got 2");
}

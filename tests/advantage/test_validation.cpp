// Every validation rule of the advantage estimators: the error names the function, the argument,
// the expectation and the actual value.
#include "helpers.hpp"

#include <rlcore/advantage/all.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

using rlcore::index_t;
using rlcore_test::check_invalid;

namespace {

struct fixture {
  std::vector<double> scores = std::vector<double>(4, 1.0);
  std::vector<double> tokens = std::vector<double>(12, 0.5);
  std::vector<double> out = std::vector<double>(12);
  std::vector<double> out2 = std::vector<double>(12);
  std::vector<double> wrong = std::vector<double>(10);
  rlcore::padded_layout<unsigned char> layout = rlcore::padded_unmasked(4, 3);
  auto m(std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 4, 3); }
  auto bad(std::vector<double>& x) { return rlcore::make_matrix_view(x.data(), 5, 2); }
};

} // namespace

TEST_CASE("group estimators: scores size, output shape, groups, eps") {
  fixture f;
  const rlcore::uniform_groups g2{2};
  std::vector<double> three(3);
  check_invalid([&] { rlcore::grpo_outcome_advantages(f.layout, three, g2, f.m(f.out)); }, "scores",
                "rlcore::grpo_outcome_advantages: argument 'scores': expected N = 4 "
                "entries (one per sequence), got 3");
  check_invalid([&] { rlcore::grpo_outcome_advantages(f.layout, f.scores, g2, f.bad(f.out)); },
                "advantages_out", "expected shape (4, 3) to match the mask, got (5, 2)");
  check_invalid(
      [&] {
        rlcore::grpo_outcome_advantages(f.layout, f.scores, rlcore::uniform_groups{3}, f.m(f.out));
      },
      "groups", "group size G = 3 does not divide the number of sequences N = 4");
  check_invalid(
      [&] {
        rlcore::grpo_outcome_advantages(f.layout, f.scores, rlcore::uniform_groups{0}, f.m(f.out));
      },
      "groups", "expected group size G >= 1, got 0");
  std::vector<index_t> short_offsets{0, 2, 3};
  check_invalid(
      [&] {
        rlcore::grpo_outcome_advantages(f.layout, f.scores, rlcore::group_offsets(short_offsets),
                                        f.m(f.out));
      },
      "groups", "expected the last group offset to equal N = 4, got 3");
  std::vector<index_t> decreasing{0, 3, 2, 4};
  const rlcore::offset_groups<index_t> raw{{decreasing.data(), 4, 1}};
  check_invalid([&] { rlcore::rloo_advantages(f.layout, f.scores, raw, f.m(f.out)); }, "groups",
                "expected non-decreasing offsets, got offsets[1] = 3 > offsets[2] = 2");
  for (double eps : {0.0, -1e-6, std::nan("")}) {
    rlcore::grpo_advantage_options o;
    o.eps = eps;
    check_invalid([&] { rlcore::grpo_outcome_advantages(f.layout, f.scores, g2, f.m(f.out), o); },
                  "options.eps", "expected a finite value > 0, got");
  }
  rlcore::grpo_advantage_options bad_scaling;
  bad_scaling.scaling = static_cast<rlcore::grpo_scaling>(7);
  check_invalid(
      [&] { rlcore::grpo_outcome_advantages(f.layout, f.scores, g2, f.m(f.out), bad_scaling); },
      "options.scaling", "expected group, batch or none, got 7");
  std::vector<double> five(5);
  check_invalid([&] { rlcore::grpo_outcome_sequence_advantages(f.scores, g2, five); },
                "advantages_out", "expected N = 4 entries (one per sequence), got 5");
  check_invalid([&] { rlcore::rloo_advantages(f.layout, three, g2, f.m(f.out)); }, "scores",
                "rlcore::rloo_advantages: argument 'scores': expected N = 4");
  check_invalid([&] { rlcore::opo_advantages(f.layout, three, g2, f.m(f.out)); }, "scores",
                "rlcore::opo_advantages: argument 'scores': expected N = 4");
  check_invalid(
      [&] { rlcore::opo_advantages(f.layout, f.scores, rlcore::uniform_groups{3}, f.m(f.out)); },
      "groups", "does not divide");
}

TEST_CASE("pass@k: groups of one sequence and eps") {
  fixture f;
  check_invalid(
      [&] {
        rlcore::pass_at_k_advantages(f.layout, f.scores, rlcore::uniform_groups{1}, f.m(f.out));
      },
      "groups", "expected every group to hold at least 2 sequences, got 4 group(s) of size 1");
  std::vector<index_t> offsets{0, 3, 4};
  check_invalid(
      [&] {
        rlcore::pass_at_k_advantages(f.layout, f.scores, rlcore::group_offsets(offsets),
                                     f.m(f.out));
      },
      "groups", "got 1 group(s) of size 1");
  rlcore::pass_at_k_options o;
  o.eps = 0;
  check_invalid(
      [&] {
        rlcore::pass_at_k_advantages(f.layout, f.scores, rlcore::uniform_groups{2}, f.m(f.out), o);
      },
      "options.eps", "expected a finite value > 0, got 0");
  check_invalid(
      [&] {
        std::vector<double> three(3);
        rlcore::pass_at_k_advantages(f.layout, three, rlcore::uniform_groups{2}, f.m(f.out));
      },
      "scores", "expected N = 4 entries");
}

TEST_CASE("GAE: gamma and lambda in [0, 1], tensor shapes, whitening options") {
  fixture f;
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    rlcore::gae_options o;
    o.gamma = bad;
    check_invalid(
        [&] {
          rlcore::gae_advantages(f.layout, f.m(f.tokens), f.m(f.tokens), f.m(f.out), f.m(f.out2),
                                 o);
        },
        "options.gamma",
        "rlcore::gae_advantages: argument 'options.gamma': expected a value in [0, 1], got");
    o = {};
    o.lambda = bad;
    check_invalid(
        [&] {
          rlcore::gae_advantages(f.layout, f.m(f.tokens), f.m(f.tokens), f.m(f.out), f.m(f.out2),
                                 o);
        },
        "options.lambda", "expected a value in [0, 1], got");
  }
  check_invalid(
      [&] {
        rlcore::gae_advantages(f.layout, f.bad(f.wrong), f.m(f.tokens), f.m(f.out), f.m(f.out2));
      },
      "token_rewards", "expected shape (4, 3) to match the mask, got (5, 2)");
  check_invalid(
      [&] {
        rlcore::gae_advantages(f.layout, f.m(f.tokens), f.bad(f.wrong), f.m(f.out), f.m(f.out2));
      },
      "values", "expected shape (4, 3)");
  check_invalid(
      [&] {
        rlcore::gae_advantages(f.layout, f.m(f.tokens), f.m(f.tokens), f.bad(f.out), f.m(f.out2));
      },
      "advantages_out", "expected shape (4, 3)");
  check_invalid(
      [&] {
        rlcore::gae_advantages(f.layout, f.m(f.tokens), f.m(f.tokens), f.m(f.out), f.bad(f.out2));
      },
      "returns_out", "expected shape (4, 3)");
  rlcore::gae_options o;
  o.whiten = true;
  o.whiten_eps = -1;
  check_invalid(
      [&] {
        rlcore::gae_advantages(f.layout, f.m(f.tokens), f.m(f.tokens), f.m(f.out), f.m(f.out2), o);
      },
      "options.whiten_eps", "expected a finite value > 0, got -1");
  // One valid token with unbiased whitening.
  std::vector<std::uint8_t> one_valid{0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  auto layout1 = rlcore::padded(rlcore::make_matrix_view(one_valid.data(), 4, 3));
  o.whiten_eps = 1e-8;
  check_invalid(
      [&] {
        rlcore::gae_advantages(layout1, f.m(f.tokens), f.m(f.tokens), f.m(f.out), f.m(f.out2), o);
      },
      "options.whiten_kind", "unbiased whitening needs at least 2 valid tokens, got 1");
}

TEST_CASE("REINFORCE++ family: gamma, shapes, baseline size, whitening") {
  fixture f;
  rlcore::reinforce_options o;
  o.gamma = 1.01;
  check_invalid(
      [&] {
        rlcore::reinforce_plus_plus_advantages(f.layout, f.m(f.tokens), f.m(f.out), f.m(f.out2), o);
      },
      "options.gamma",
      "rlcore::reinforce_plus_plus_advantages: argument 'options.gamma': expected a value in [0, "
      "1], got 1.01");
  check_invalid(
      [&] {
        rlcore::reinforce_plus_plus_advantages(f.layout, f.m(f.tokens), f.m(f.out), f.bad(f.out2));
      },
      "returns_out", "expected shape (4, 3)");
  o = {};
  o.whiten_eps = 0;
  check_invalid(
      [&] {
        rlcore::reinforce_plus_plus_advantages(f.layout, f.m(f.tokens), f.m(f.out), f.m(f.out2), o);
      },
      "options.whiten_eps", "expected a finite value > 0, got 0");
  o = {};
  o.whiten_kind = static_cast<rlcore::whiten_kind>(9);
  check_invalid(
      [&] {
        rlcore::reinforce_plus_plus_advantages(f.layout, f.m(f.tokens), f.m(f.out), f.m(f.out2), o);
      },
      "options.whiten_kind", "expected unbiased, population, mean_only or none, got 9");
  check_invalid(
      [&] {
        rlcore::reinforce_plus_plus_baseline_advantages(f.layout, f.m(f.tokens),
                                                        rlcore::uniform_groups{3}, f.m(f.out));
      },
      "groups", "does not divide the number of sequences N = 4");
  check_invalid(
      [&] {
        rlcore::reinforce_plus_plus_baseline_advantages(f.layout, f.bad(f.wrong),
                                                        rlcore::uniform_groups{2}, f.m(f.out));
      },
      "token_rewards", "expected shape (4, 3)");
  std::vector<double> three(3);
  check_invalid([&] { rlcore::remax_advantages(f.layout, f.m(f.tokens), three, f.m(f.out)); },
                "baseline_rewards",
                "rlcore::remax_advantages: argument 'baseline_rewards': expected N = 4 entries "
                "(one per sequence), got 3");
  rlcore::remax_options ro;
  ro.gamma = -1;
  check_invalid(
      [&] { rlcore::remax_advantages(f.layout, f.m(f.tokens), f.scores, f.m(f.out), ro); },
      "options.gamma", "expected a value in [0, 1], got -1");
  // One valid token in the batch with the default unbiased whitening.
  std::vector<std::uint8_t> one_valid{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  auto layout1 = rlcore::padded(rlcore::make_matrix_view(one_valid.data(), 4, 3));
  check_invalid(
      [&] {
        rlcore::reinforce_plus_plus_advantages(layout1, f.m(f.tokens), f.m(f.out), f.m(f.out2));
      },
      "options.whiten_kind", "unbiased whitening needs at least 2 valid tokens, got 1");
}

TEST_CASE("GRPO process, whiten and sequence scores") {
  fixture f;
  rlcore::grpo_process_options o;
  o.eps = -1;
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages(f.layout, f.m(f.tokens), f.m(f.tokens),
                                        rlcore::uniform_groups{2}, f.m(f.out), o);
      },
      "options.eps",
      "rlcore::grpo_process_advantages: argument 'options.eps': expected a finite value > 0, got "
      "-1");
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages(f.layout, f.m(f.tokens), f.bad(f.wrong),
                                        rlcore::uniform_groups{2}, f.m(f.out));
      },
      "step_end_mask", "expected shape (4, 3)");
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages(f.layout, f.bad(f.wrong), f.m(f.tokens),
                                        rlcore::uniform_groups{2}, f.m(f.out));
      },
      "step_rewards", "expected shape (4, 3)");
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages(f.layout, f.m(f.tokens), f.m(f.tokens),
                                        rlcore::uniform_groups{8}, f.m(f.out));
      },
      "groups", "group size G = 8 does not divide");

  check_invalid(
      [&] {
        rlcore::whiten(f.layout, f.m(f.out), {rlcore::whiten_kind::unbiased, 0.0});
      },
      "options.eps", "rlcore::whiten: argument 'options.eps': expected a finite value > 0, got 0");
  check_invalid(
      [&] {
        rlcore::whiten(f.layout, f.m(f.out), {static_cast<rlcore::whiten_kind>(5), 1e-8});
      },
      "options.kind", "expected unbiased, population, mean_only or none, got 5");
  check_invalid([&] { rlcore::whiten(f.layout, f.bad(f.out)); }, "x_inout",
                "expected shape (4, 3)");
  std::vector<double> one{3.0};
  check_invalid(
      [&] {
        rlcore::whiten(rlcore::padded_unmasked(1, 1), rlcore::make_matrix_view(one.data(), 1, 1));
      },
      "x_inout", "unbiased whitening needs at least 2 valid tokens, got 1");
  std::vector<double> five(5);
  check_invalid([&] { rlcore::sequence_scores(f.layout, f.m(f.tokens), five); }, "scores_out",
                "rlcore::sequence_scores: argument 'scores_out': expected N = 4 entries (one per "
                "sequence), got 5");
  check_invalid([&] { rlcore::sequence_scores(f.layout, f.bad(f.wrong), f.scores); },
                "token_rewards", "expected shape (4, 3)");
}

TEST_CASE("no valid token at all: estimators write zeros, whitening has nothing to do") {
  std::vector<std::uint8_t> none(6, 0);
  auto layout = rlcore::padded(rlcore::make_matrix_view(none.data(), 2, 3));
  std::vector<double> r(6, 1.0), a(6, 42), ret(6, 42);
  rlcore::reinforce_plus_plus_advantages(layout, rlcore::make_matrix_view(r.data(), 2, 3),
                                         rlcore::make_matrix_view(a.data(), 2, 3),
                                         rlcore::make_matrix_view(ret.data(), 2, 3));
  CHECK(a == std::vector<double>(6, 0.0));
  CHECK(ret == std::vector<double>(6, 0.0));
  rlcore::gae_advantages(layout, rlcore::make_matrix_view(r.data(), 2, 3),
                         rlcore::make_matrix_view(r.data(), 2, 3),
                         rlcore::make_matrix_view(a.data(), 2, 3),
                         rlcore::make_matrix_view(ret.data(), 2, 3), {1.0, 1.0, true});
  CHECK(a == std::vector<double>(6, 0.0));
  std::vector<double> s{1, 2};
  rlcore::opo_advantages(layout, s, rlcore::uniform_groups{2},
                         rlcore::make_matrix_view(a.data(), 2, 3));
  CHECK(a == std::vector<double>(6, 0.0));
}

TEST_CASE("GRPO process from step lists: offsets, positions, values") {
  auto layout = rlcore::padded_unmasked(2, 4);
  std::vector<double> adv(8);
  auto out = rlcore::make_matrix_view(adv.data(), 2, 4);
  const rlcore::uniform_groups g{2};
  std::vector<int> offsets{0, 2, 3}, positions{1, 3, 2};
  std::vector<double> values{1, 0, 2};
  std::vector<int> short_offsets{0, 3};
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages_from_steps(layout, short_offsets, positions, values, g,
                                                   out);
      },
      "step_offsets", "expected N + 1 = 3 entries, got 2");
  std::vector<int> bad_offsets{0, 3, 2};
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages_from_steps(layout, bad_offsets, positions, values, g, out);
      },
      "step_offsets",
      "expected offsets[0] == 0, non-decreasing, offsets[N] == number of steps = 3, got 1 "
      "violation(s)");
  std::vector<int> wrong_total{0, 1, 2};
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages_from_steps(layout, wrong_total, positions, values, g, out);
      },
      "step_offsets", "got 1 violation(s)");
  std::vector<int> unordered{3, 1, 2};
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages_from_steps(layout, offsets, unordered, values, g, out);
      },
      "step_positions",
      "expected strictly increasing token indices inside each row [0, row length), got 1 row(s)");
  std::vector<int> outside{1, 4, 2};
  check_invalid(
      [&] { rlcore::grpo_process_advantages_from_steps(layout, offsets, outside, values, g, out); },
      "step_positions", "got 1 row(s) violating it");
  std::vector<double> two_values{1, 0};
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages_from_steps(layout, offsets, positions, two_values, g, out);
      },
      "step_values", "expected 3 entries (one per step position), got 2");
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages_from_steps(layout, offsets, positions, values,
                                                   rlcore::uniform_groups{3}, out);
      },
      "groups", "does not divide");
}

TEST_CASE("an empty batch (N = 0) is valid and writes nothing") {
  auto layout = rlcore::padded_unmasked(0, 5);
  std::vector<double> none;
  auto v = rlcore::make_matrix_view(none.data(), 0, 5);
  auto stats = rlcore::grpo_outcome_advantages(layout, none, rlcore::uniform_groups{4}, v);
  CHECK(stats.num_groups == 0);
  CHECK(stats.zero_spread_fraction == 0.0);
  rlcore::gae_advantages(layout, v, v, v, v, {1.0, 1.0, true});
  rlcore::reinforce_plus_plus_advantages(layout, v, v, v);
  rlcore::whiten(layout, v);
  CHECK(none.empty());
}

TEST_CASE("enumerated options outside their enumerators are rejected") {
  fixture f;
  const rlcore::uniform_groups g2{2};
  rlcore::grpo_advantage_options o;
  o.std_kind = static_cast<rlcore::std_kind>(3);
  check_invalid([&] { rlcore::grpo_outcome_advantages(f.layout, f.scores, g2, f.m(f.out), o); },
                "options.std_kind", "expected unbiased or population, got 3");
  o = {};
  o.singleton_group = static_cast<rlcore::singleton_group_policy>(2);
  check_invalid([&] { rlcore::grpo_outcome_advantages(f.layout, f.scores, g2, f.m(f.out), o); },
                "options.singleton_group", "expected zero or raw_reward, got 2");
  rlcore::pass_at_k_options po;
  po.std_kind = static_cast<rlcore::std_kind>(4);
  check_invalid([&] { rlcore::pass_at_k_advantages(f.layout, f.scores, g2, f.m(f.out), po); },
                "options.std_kind", "expected unbiased or population, got 4");
  rlcore::grpo_process_options pr;
  pr.std_kind = static_cast<rlcore::std_kind>(5);
  check_invalid(
      [&] {
        rlcore::grpo_process_advantages(f.layout, f.m(f.tokens), f.m(f.tokens), g2, f.m(f.out), pr);
      },
      "options.std_kind", "rlcore::grpo_process_advantages: argument 'options.std_kind'");
  std::vector<double> columns(8, 1.0), w{1, 1}, out(4);
  rlcore::normalized_reward_sum_options no;
  no.std_kind = static_cast<rlcore::std_kind>(6);
  check_invalid(
      [&] {
        rlcore::normalized_reward_sum(rlcore::make_matrix_view(columns.data(), 4, 2), w, g2, out,
                                      no);
      },
      "options.std_kind", "got 6");
}

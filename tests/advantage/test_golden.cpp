// Golden values from the independent PyTorch reference scripts/golden/advantages.py
// (tests/golden/advantages_cases.txt): every estimator on random batches with interior masked
// tokens, garbage in masked slots, ties and a zero-spread group, in double.
#include <rlcore/advantage/all.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using rlcore::index_t;

namespace {

struct golden_case {
  index_t rows = 0;
  index_t cols = 0;
  std::map<std::string, std::vector<double>> fields;
  const std::vector<double>& operator[](const std::string& key) const {
    const auto it = fields.find(key);
    REQUIRE_MESSAGE(it != fields.end(), "missing golden field ", key);
    return it->second;
  }
};

std::map<std::string, golden_case> load_golden() {
  std::ifstream in(std::string(RLCORE_GOLDEN_DIR) + "/advantages_cases.txt");
  REQUIRE_MESSAGE(in.good(), "cannot open advantages_cases.txt in ", RLCORE_GOLDEN_DIR);
  std::map<std::string, golden_case> cases;
  golden_case* current = nullptr;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key == "case") {
      std::string name;
      golden_case c;
      words >> name >> c.rows >> c.cols;
      current = &(cases[name] = c);
      continue;
    }
    REQUIRE(current != nullptr);
    std::vector<double> values;
    double v = 0;
    while (words >> v) {
      values.push_back(v);
    }
    current->fields[key] = values;
  }
  return cases;
}

void check_close(const std::vector<double>& actual, const std::vector<double>& expected,
                 const char* what) {
  INFO(what);
  REQUIRE(actual.size() == expected.size());
  for (size_t k = 0; k < actual.size(); ++k) {
    INFO("index ", k);
    CHECK(actual[k] == doctest::Approx(expected[k]).epsilon(1e-12).scale(1.0));
  }
}

std::vector<std::uint8_t> as_mask(const std::vector<double>& m) {
  return {m.begin(), m.end()};
}

} // namespace

TEST_CASE("golden: group estimators against the PyTorch reference") {
  const auto cases = load_golden();
  const golden_case& c = cases.at("group");
  const auto mask = as_mask(c["mask"]);
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), c.rows, c.cols));
  const auto& scores = c["scores"];
  const rlcore::uniform_groups groups{4};
  std::vector<double> seq(static_cast<size_t>(c.rows));
  rlcore::grpo_advantage_options o;
  rlcore::grpo_outcome_sequence_advantages(scores, groups, seq, o);
  check_close(seq, c["grpo_group_unbiased"], "grpo group unbiased");
  o.std_kind = rlcore::std_kind::population;
  rlcore::grpo_outcome_sequence_advantages(scores, groups, seq, o);
  check_close(seq, c["grpo_group_population"], "grpo group population");
  o = {};
  o.scaling = rlcore::grpo_scaling::batch;
  rlcore::grpo_outcome_sequence_advantages(scores, groups, seq, o);
  check_close(seq, c["grpo_batch"], "grpo batch");
  o.scaling = rlcore::grpo_scaling::none;
  rlcore::grpo_outcome_sequence_advantages(scores, groups, seq, o);
  check_close(seq, c["grpo_none"], "grpo none");

  // Token estimators: the per-sequence reference broadcast over the mask.
  std::vector<double> tokens(mask.size());
  auto broadcast = [&](const std::vector<double>& per_sequence) {
    std::vector<double> out(mask.size());
    for (size_t k = 0; k < out.size(); ++k) {
      out[k] = mask[k] ? per_sequence[k / static_cast<size_t>(c.cols)] : 0.0;
    }
    return out;
  };
  auto tv = rlcore::make_matrix_view(tokens.data(), c.rows, c.cols);
  rlcore::grpo_outcome_advantages(layout, scores, groups, tv);
  check_close(tokens, broadcast(c["grpo_group_unbiased"]), "grpo broadcast");
  rlcore::rloo_advantages(layout, scores, groups, tv);
  check_close(tokens, broadcast(c["rloo"]), "rloo");
  rlcore::opo_advantages(layout, scores, groups, tv);
  check_close(tokens, broadcast(c["opo"]), "opo");
  rlcore::pass_at_k_advantages(layout, scores, groups, tv);
  check_close(tokens, broadcast(c["pass_at_k"]), "pass@k");
  rlcore::pass_at_k_options po;
  po.divide_by_std = false;
  rlcore::pass_at_k_advantages(layout, scores, groups, tv, po);
  check_close(tokens, broadcast(c["pass_at_k_raw"]), "pass@k raw");
}

TEST_CASE("golden: token estimators against the PyTorch reference") {
  const auto cases = load_golden();
  const golden_case& c = cases.at("token");
  const auto mask = as_mask(c["mask"]);
  auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), c.rows, c.cols));
  auto view = [&](const std::vector<double>& x) {
    return rlcore::make_matrix_view(x.data(), c.rows, c.cols);
  };
  std::vector<double> a(mask.size()), ret(mask.size());
  auto av = rlcore::make_matrix_view(a.data(), c.rows, c.cols);
  auto rv = rlcore::make_matrix_view(ret.data(), c.rows, c.cols);
  const auto& r = c["rewards"];

  rlcore::gae_options go{0.95, 0.9};
  rlcore::gae_advantages(layout, view(r), view(c["values"]), av, rv, go);
  check_close(a, c["gae_adv"], "gae advantages");
  check_close(ret, c["gae_ret"], "gae returns");
  go.whiten = true;
  rlcore::gae_advantages(layout, view(r), view(c["values"]), av, rv, go);
  check_close(a, c["gae_adv_whitened"], "gae whitened");
  check_close(ret, c["gae_ret"], "gae returns (unwhitened)");

  rlcore::reinforce_options ro;
  ro.gamma = 0.95;
  rlcore::reinforce_plus_plus_advantages(layout, view(r), av, rv, ro);
  check_close(ret, c["rpp_ret"], "reinforce++ returns");
  check_close(a, c["rpp_adv"], "reinforce++ advantages");
  ro.whiten_kind = rlcore::whiten_kind::population;
  rlcore::reinforce_plus_plus_advantages(layout, view(r), av, rv, ro);
  check_close(a, c["rpp_adv_population"], "reinforce++ population whitening");
  ro.whiten_kind = rlcore::whiten_kind::unbiased;
  rlcore::reinforce_plus_plus_baseline_advantages(layout, view(r), rlcore::uniform_groups{2}, av,
                                                  ro);
  check_close(a, c["rpp_baseline_adv"], "reinforce++ baseline");

  rlcore::remax_advantages(layout, view(r), c["greedy"], av);
  check_close(a, c["remax_adv"], "remax");

  rlcore::grpo_process_advantages(layout, view(c["step_rewards"]), view(c["step_ends"]),
                                  rlcore::uniform_groups{2}, av);
  check_close(a, c["process_adv"], "grpo process");

  a = r;
  rlcore::whiten(layout, av, {rlcore::whiten_kind::mean_only, 1e-8});
  check_close(a, c["whiten_mean_only"], "whiten mean only");
}

TEST_CASE("golden: reward combination against the PyTorch reference") {
  const auto cases = load_golden();
  const golden_case& c = cases.at("reward");
  auto columns = rlcore::make_matrix_view(c["columns"].data(), c.rows, c.cols);
  std::vector<double> out(static_cast<size_t>(c.rows));
  rlcore::weighted_reward_sum(columns, c["weights"], out);
  check_close(out, c["weighted_sum"], "weighted sum");
  rlcore::normalized_reward_sum(columns, c["weights"], rlcore::uniform_groups{3}, out);
  check_close(out, c["gdpo"], "gdpo");
  rlcore::normalized_reward_sum_options o;
  o.normalize_batch = false;
  rlcore::normalized_reward_sum(columns, c["weights"], rlcore::uniform_groups{3}, out, o);
  check_close(out, c["gdpo_no_batch"], "gdpo without the batch stage");
}

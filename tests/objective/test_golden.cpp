// Golden values from the independent PyTorch reference scripts/golden/objectives.py (autograd
// gradients, float64): every loss form, KL estimator, IS correction and entropy masking, the value
// loss and the standalone KL penalty.
#include "objective_test_util.hpp"

#include <rlcore/objective/kl_penalty.hpp>
#include <rlcore/objective/value_loss.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

using rlcore::aggregation;
using rlcore::policy_loss;
using rlcore::policy_options;

namespace {

struct golden_case {
  double loss = 0;
  std::vector<double> grad, grad_entropy;
};

struct golden_file {
  rlcore::index_t rows = 0, cols = 0;
  std::map<std::string, std::vector<double>> inputs;
  std::map<std::string, golden_case> cases;
};

std::vector<double> read_values(std::istringstream& in) {
  std::vector<double> v;
  double x = 0;
  while (in >> x) {
    v.push_back(x);
  }
  return v;
}

golden_file load() {
  golden_file g;
  std::ifstream file(std::string(RLCORE_GOLDEN_DIR) + "/objectives_cases.txt");
  REQUIRE(file.good());
  std::string line;
  std::string current;
  while (std::getline(file, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::istringstream in(line);
    std::string key;
    in >> key;
    if (key == "inputs") {
      in >> g.rows >> g.cols;
    } else if (key == "case") {
      in >> current;
    } else if (current.empty()) {
      g.inputs[key] = read_values(in);
    } else if (key == "loss") {
      in >> g.cases[current].loss;
    } else if (key == "grad") {
      g.cases[current].grad = read_values(in);
    } else if (key == "grad_entropy") {
      g.cases[current].grad_entropy = read_values(in);
    }
  }
  return g;
}

// The rlcore options of each golden case (the script's CASES table).
policy_options options_for(const std::string& name) {
  policy_options o;
  if (name == "grpo_default") {
    o.kl_beta = 0.04;
    o.aggregation.mode = aggregation::seq_mean_token_mean;
  } else if (name == "clip_higher_entropy") {
    o.eps_high = 0.28;
    o.entropy_coef = 0.01;
  } else if (name == "dual_clip") {
    o.dual_clip = 1.3;
    o.aggregation.mode = aggregation::seq_mean_token_sum;
  } else if (name == "gspo_sequence" || name == "gspo_token") {
    o.loss = policy_loss::gspo;
    o.gspo = name == "gspo_token" ? rlcore::gspo_level::token : rlcore::gspo_level::sequence;
    o.gspo_eps_low = 0.1;
    o.gspo_eps_high = 0.1;
    o.aggregation.mode = aggregation::seq_mean_token_mean;
  } else if (name == "gmpo") {
    o.loss = policy_loss::gmpo;
    o.aggregation.mode = aggregation::seq_mean_token_mean;
  } else if (name == "cispo") {
    o.loss = policy_loss::cispo;
  } else if (name == "sapo") {
    o.loss = policy_loss::sapo;
    o.aggregation.mode = aggregation::token_sum;
  } else if (name == "reinforce_drgrpo") {
    o.loss = policy_loss::reinforce;
    o.aggregation.mode = aggregation::seq_mean_token_sum_norm;
    o.aggregation.length_normalizer = 8;
  } else if (name.rfind("kl_", 0) == 0) {
    o.kl_beta = 0.1;
    const std::string e = name.substr(3);
    for (auto k : {rlcore::kl_estimator::k1, rlcore::kl_estimator::abs, rlcore::kl_estimator::k2,
                   rlcore::kl_estimator::k1_plus, rlcore::kl_estimator::k3_plus,
                   rlcore::kl_estimator::k3_importance}) {
      if (e == rlcore::to_string(k)) {
        o.kl = k;
      }
    }
  } else if (name == "is_token_truncate") {
    o.importance.level = rlcore::importance_level::token;
    o.importance.cap = 1.2;
  } else if (name == "is_sequence_mask") {
    o.importance.level = rlcore::importance_level::sequence;
    o.importance.mode = rlcore::importance_mode::mask;
  } else if (name == "entropy_mask") {
    o.entropy_top_fraction = 0.5;
    o.entropy_coef = 0.02;
  } else {
    FAIL("unknown golden case ", name);
  }
  return o;
}

void check_close(const std::vector<double>& got, const std::vector<double>& expected) {
  REQUIRE(got.size() == expected.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    INFO("slot ", k, ": rlcore ", got[k], " torch ", expected[k]);
    CHECK(std::abs(got[k] - expected[k]) <= 1e-12 * std::max(1.0, std::abs(expected[k])));
  }
}

} // namespace

TEST_CASE("golden: policy objectives match the PyTorch autograd reference") {
  const golden_file g = load();
  rlcore_test::policy_batch b;
  b.rows = g.rows;
  b.cols = g.cols;
  b.mask = g.inputs.at("mask");
  b.log_probs = g.inputs.at("log_probs");
  b.old_log_probs = g.inputs.at("old_log_probs");
  b.ref_log_probs = g.inputs.at("ref_log_probs");
  b.rollout_log_probs = g.inputs.at("rollout_log_probs");
  b.advantages = g.inputs.at("advantages");
  b.entropy = g.inputs.at("entropy");
  int policy_cases = 0;
  for (const auto& [name, expected] : g.cases) {
    if (name == "value_loss" || name == "kl_penalty_k3") {
      continue;
    }
    ++policy_cases;
    INFO("case ", name);
    const auto r = rlcore_test::run_policy(b, options_for(name));
    CHECK(r.loss == doctest::Approx(expected.loss).epsilon(1e-12));
    check_close(r.grad, expected.grad);
    if (!expected.grad_entropy.empty()) {
      check_close(r.grad_entropy, expected.grad_entropy);
    }
  }
  CHECK(policy_cases == 18);
}

TEST_CASE("golden: value loss (c = 0.2) and standalone k3 KL penalty") {
  const golden_file g = load();
  auto view = [&](const std::vector<double>& x) {
    return rlcore::make_matrix_view(x.data(), g.rows, g.cols);
  };
  auto layout = rlcore::padded(view(g.inputs.at("mask")));
  std::vector<double> grad(g.inputs.at("mask").size());
  rlcore::value_loss_options vo;
  vo.clip = 0.2;
  const auto v = rlcore::value_loss(layout, view(g.inputs.at("values")),
                                    view(g.inputs.at("old_values")), view(g.inputs.at("returns")),
                                    rlcore::make_matrix_view(grad.data(), g.rows, g.cols), vo);
  CHECK(v.loss == doctest::Approx(g.cases.at("value_loss").loss).epsilon(1e-12));
  check_close(grad, g.cases.at("value_loss").grad);

  rlcore::kl_penalty_options ko;
  ko.aggregation.mode = aggregation::seq_mean_token_mean;
  const auto k = rlcore::kl_penalty_loss(layout, view(g.inputs.at("log_probs")),
                                         view(g.inputs.at("ref_log_probs")),
                                         rlcore::make_matrix_view(grad.data(), g.rows, g.cols), ko);
  CHECK(k.loss == doctest::Approx(g.cases.at("kl_penalty_k3").loss).epsilon(1e-12));
  check_close(grad, g.cases.at("kl_penalty_k3").grad);
}

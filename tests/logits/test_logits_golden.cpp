// Golden values from the independent PyTorch reference scripts/golden/logits.py
// (tests/golden/logits_cases.txt): log-probs, entropy, full KL and both gradients, in double and
// (looser) float.
#include <rlcore/objective/logits.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using rlcore::index_t;

namespace {

struct golden_case {
  std::string name;
  index_t rows = 0;
  index_t vocab = 0;
  double tau = 1.0;
  std::map<std::string, std::vector<double>> fields;
  [[nodiscard]] const std::vector<double>& at(const std::string& key) const {
    return fields.at(key);
  }
};

std::vector<golden_case> load_cases() {
  std::ifstream in(std::string(RLCORE_GOLDEN_DIR) + "/logits_cases.txt");
  REQUIRE(in.good());
  std::vector<golden_case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key == "case") {
      golden_case c;
      words >> c.name >> c.rows >> c.vocab >> c.tau;
      cases.push_back(c);
      continue;
    }
    REQUIRE(!cases.empty());
    std::vector<double> values;
    double v = 0;
    while (words >> v) {
      values.push_back(v);
    }
    cases.back().fields[key] = values;
  }
  return cases;
}

template <class T>
void check_case(const golden_case& c, double tol) {
  INFO("case ", c.name);
  const auto& z64 = c.at("logits");
  const auto& q64 = c.at("ref_logits");
  const std::vector<T> z(z64.begin(), z64.end());
  const std::vector<T> q(q64.begin(), q64.end());
  std::vector<long> ids;
  for (double id : c.at("ids")) {
    ids.push_back(static_cast<long>(id));
  }
  const auto cast = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  const auto rows = static_cast<std::size_t>(c.rows);
  const auto zv = rlcore::make_matrix_view(z.data(), c.rows, c.vocab);
  const auto qv = rlcore::make_matrix_view(q.data(), c.rows, c.vocab);
  rlcore::logits_options options;
  options.temperature = c.tau;

  std::vector<T> lp(rows);
  std::vector<T> h(rows);
  std::vector<T> kl(rows);
  rlcore::token_log_probs(zv, ids, lp, h, options);
  rlcore::full_kl_from_logits(zv, qv, kl, options);
  for (std::size_t r = 0; r < rows; ++r) {
    CHECK(double(lp[r]) == doctest::Approx(c.at("lp")[r]).epsilon(tol).scale(1));
    CHECK(double(h[r]) == doctest::Approx(c.at("entropy")[r]).epsilon(tol).scale(1));
    CHECK(double(kl[r]) == doctest::Approx(c.at("kl")[r]).epsilon(tol).scale(1));
  }

  std::vector<T> grad_token(z.size());
  std::vector<T> grad_kl(z.size());
  rlcore::token_log_probs_backward(zv, ids, cast(c.at("g_lp")), cast(c.at("g_h")),
                                   rlcore::make_matrix_view(grad_token.data(), c.rows, c.vocab),
                                   options);
  rlcore::full_kl_from_logits_backward(zv, qv, cast(c.at("g_kl")),
                                       rlcore::make_matrix_view(grad_kl.data(), c.rows, c.vocab),
                                       options);
  for (std::size_t j = 0; j < z.size(); ++j) {
    CHECK(double(grad_token[j]) == doctest::Approx(c.at("grad_token")[j]).epsilon(tol).scale(1));
    CHECK(double(grad_kl[j]) == doctest::Approx(c.at("grad_kl")[j]).epsilon(tol).scale(1));
  }
}

} // namespace

TEST_CASE("golden values from the PyTorch reference (double)") {
  const auto cases = load_cases();
  CHECK(cases.size() == 5);
  for (const auto& c : cases) {
    check_case<double>(c, 1e-12);
  }
}

TEST_CASE("golden values from the PyTorch reference (float logits, fp32 accumulation)") {
  for (const auto& c : load_cases()) {
    check_case<float>(c, 2e-5);
  }
}

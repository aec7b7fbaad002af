// Tokenizer, problems, split and the rule-based rewards, checked on hand-worked cases.
#include "task.hpp"

#include <doctest/doctest.h>

#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

using namespace arith;

TEST_CASE("tokenizer round-trips and rejects unknown characters") {
  CHECK(tokenizer::encode("37+85=") == std::vector<int>{3, 7, 10, 8, 5, 11});
  CHECK(tokenizer::decode(std::vector<int>{1, 2, 2, 12}) == "122.");
  CHECK_THROWS_AS(tokenizer::encode('x'), std::invalid_argument);
  CHECK_THROWS_AS(tokenizer::decode(13), std::invalid_argument);
}

TEST_CASE("problems: zero-padded prompt, answer with end token, padded answer tokens") {
  const problem p{7, 85};
  CHECK(p.prompt() == "07+85=");
  CHECK(p.answer() == "92.");
  CHECK(p.answer_tokens() == std::vector<int>{9, 2, 12, 12});
  CHECK(problem{0, 0}.answer() == "0.");
}

TEST_CASE("split: disjoint, complete, deterministic") {
  const auto s = make_split(0.2, 1);
  CHECK(s.test.size() == 2000);
  CHECK(s.train.size() == 8000);
  std::set<std::pair<int, int>> seen;
  for (const auto* set : {&s.train, &s.test}) {
    for (const auto& p : *set) {
      seen.insert({p.a, p.b});
    }
  }
  CHECK(seen.size() == 10000);
  CHECK(make_split(0.2, 1).test[0].a == s.test[0].a);
  CHECK(make_split(0.2, 1).test[0].b == s.test[0].b);
}

TEST_CASE("outcome reward: exact answer with end token only") {
  const problem p{37, 85}; // 122.
  const int right[4] = {1, 2, 2, 12};
  const int no_end[4] = {1, 2, 2, 2};
  const int wrong[4] = {1, 2, 3, 12};
  const int short_answer[4] = {1, 2, 12, 12};
  CHECK(outcome_reward(p, right) == 1.0);
  CHECK(outcome_reward(p, no_end) == 0.0);
  CHECK(outcome_reward(p, wrong) == 0.0);
  CHECK(outcome_reward(p, short_answer) == 0.0);
  CHECK(response_tokens(right) == 4);
  CHECK(response_tokens(short_answer) == 3);
  CHECK(response_tokens(no_end) == 4);
}

TEST_CASE("process rewards: one step per answer token, reward at that token") {
  float r[4], s[4];
  const problem p{37, 85}; // reference 1 2 2 .
  const int one_wrong_digit[4] = {1, 3, 2, 12};
  process_rewards(p, one_wrong_digit, r, s);
  CHECK(std::vector<float>(r, r + 4) == std::vector<float>{1, 0, 1, 1});
  CHECK(std::vector<float>(s, s + 4) == std::vector<float>{1, 1, 1, 1});
  // Stops early: steps only on its 2 valid tokens; the early end token is wrong.
  const int early[4] = {1, 12, 12, 12};
  process_rewards(p, early, r, s);
  CHECK(std::vector<float>(r, r + 4) == std::vector<float>{1, 0, 0, 0});
  CHECK(std::vector<float>(s, s + 4) == std::vector<float>{1, 1, 0, 0});
  // Reference "9." (2 steps); a long response is judged at the reference end position.
  const problem q{4, 5};
  const int long_answer[4] = {9, 9, 12, 12};
  process_rewards(q, long_answer, r, s);
  CHECK(std::vector<float>(r, r + 4) == std::vector<float>{1, 0, 0, 0});
  CHECK(std::vector<float>(s, s + 4) == std::vector<float>{1, 1, 0, 0});
}

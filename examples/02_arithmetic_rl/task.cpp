#include "task.hpp"

#include <algorithm>
#include <random>
#include <stdexcept>

namespace arith {

int tokenizer::encode(char c) {
  const std::string a = alphabet;
  const auto pos = a.find(c);
  if (pos == std::string::npos) {
    throw std::invalid_argument(std::string("tokenizer: unknown character '") + c + "'");
  }
  return static_cast<int>(pos);
}

char tokenizer::decode(int id) {
  if (id < 0 || id >= vocab) {
    throw std::invalid_argument("tokenizer: token id out of range");
  }
  return alphabet[id];
}

std::vector<int> tokenizer::encode(const std::string& text) {
  std::vector<int> ids;
  ids.reserve(text.size());
  for (char c : text) {
    ids.push_back(encode(c));
  }
  return ids;
}

std::string tokenizer::decode(const std::vector<int>& ids) {
  std::string text;
  for (int id : ids) {
    text.push_back(decode(id));
  }
  return text;
}

std::string problem::prompt() const {
  const auto two = [](int x) { return std::string(1, char('0' + x / 10)) + char('0' + x % 10); };
  return two(a) + "+" + two(b) + "=";
}

std::string problem::answer() const {
  return std::to_string(a + b) + ".";
}

std::vector<int> problem::prompt_tokens() const {
  return tokenizer::encode(prompt());
}

std::vector<int> problem::answer_tokens() const {
  auto ids = tokenizer::encode(answer());
  ids.resize(task_shape::response_length, tokenizer::end);
  return ids;
}

problem_split make_split(double test_fraction, std::uint64_t seed) {
  std::vector<problem> all;
  for (int a = 0; a < 100; ++a) {
    for (int b = 0; b < 100; ++b) {
      all.push_back({a, b});
    }
  }
  std::mt19937_64 rng(seed);
  for (size_t i = all.size() - 1; i > 0; --i) { // Fisher-Yates, portable across libraries
    std::swap(all[i], all[static_cast<size_t>(rng() % (i + 1))]);
  }
  const auto n_test = static_cast<size_t>(test_fraction * static_cast<double>(all.size()));
  problem_split split;
  split.test.assign(all.begin(), all.begin() + static_cast<long>(n_test));
  split.train.assign(all.begin() + static_cast<long>(n_test), all.end());
  return split;
}

int response_tokens(const int* response) {
  for (int t = 0; t < task_shape::response_length; ++t) {
    if (response[t] == tokenizer::end) {
      return t + 1;
    }
  }
  return task_shape::response_length;
}

double outcome_reward(const problem& p, const int* response) {
  const auto expected = tokenizer::encode(p.answer());
  for (size_t t = 0; t < expected.size(); ++t) {
    if (response[t] != expected[t]) {
      return 0.0;
    }
  }
  return 1.0;
}

void process_rewards(const problem& p, const int* response, float* rewards, float* step_end) {
  const auto expected = tokenizer::encode(p.answer());
  const int steps = std::min(static_cast<int>(expected.size()), response_tokens(response));
  for (int t = 0; t < task_shape::response_length; ++t) {
    const bool step = t < steps;
    step_end[t] = step ? 1.0f : 0.0f;
    rewards[t] = step && response[t] == expected[static_cast<size_t>(t)] ? 1.0f : 0.0f;
  }
}

} // namespace arith

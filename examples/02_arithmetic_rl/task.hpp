// The arithmetic task: problems "AB+CD=" (two-digit operands, zero padded) whose answer is the
// decimal sum followed by the end token '.', e.g. "37+85=" -> "122.". Character tokenizer,
// deterministic train / held-out split, and the rule-based (verifiable) rewards.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace arith {

/// Character tokenizer over "0123456789+=." (13 tokens; '.' ends an answer and pads).
struct tokenizer {
  static constexpr const char* alphabet = "0123456789+=.";
  static constexpr int vocab = 13;
  static constexpr int end = 12;
  static int encode(char c);
  static char decode(int id);
  static std::vector<int> encode(const std::string& text);
  static std::string decode(const std::vector<int>& ids);
};

/// Sizes of the task's sequences.
struct task_shape {
  static constexpr int prompt_length = 6;   // "AB+CD="
  static constexpr int response_length = 4; // up to 3 answer digits + '.'
  static constexpr int sequence_length = prompt_length + response_length;
};

struct problem {
  int a = 0;
  int b = 0;
  [[nodiscard]] std::string prompt() const; // "07+85="
  [[nodiscard]] std::string answer() const; // "92." (digits then the end token)
  [[nodiscard]] std::vector<int> prompt_tokens() const;
  [[nodiscard]] std::vector<int> answer_tokens() const; // response_length ids, padded with end
};

/// All 100 x 100 problems shuffled with `seed`, split into train and held-out (test) sets.
struct problem_split {
  std::vector<problem> train;
  std::vector<problem> test;
};
problem_split make_split(double test_fraction, std::uint64_t seed);

/// Outcome reward: 1 if the response (response_length ids) spells exactly the answer digits
/// followed by the end token, else 0.
double outcome_reward(const problem& p, const int* response);

/// Process rewards: one step per answer token (each digit, then the end token). Step j's reward
/// sits at response position j: 1 if the token there equals the answer's token j, else 0. Steps
/// are the positions t < min(len(answer), response_tokens(response)) (len counts the end token),
/// so every step sits on a valid response token: a response that stops early is penalised at its
/// (wrong) end token, one that runs long at the reference end position. Writes `rewards` and
/// `step_end` (1 at step positions, else 0), both response_length long.
void process_rewards(const problem& p, const int* response, float* rewards, float* step_end);

/// Number of valid response tokens: up to and including the first end token (or all).
int response_tokens(const int* response);

} // namespace arith

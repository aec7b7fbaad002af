// The demo pipeline: SFT warm-up, then each RL method from the same checkpoint, with progress
// lines, CSV logs, a final comparison table and (with gnuplot) PNG plots.
#pragma once

#include "model.hpp"
#include "rl.hpp"

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace arith {

struct demo_options {
  model_config model{};              ///< vocab/outputs are the tokenizer's; context 10
  int sft_steps = 1000;              ///< at most this many supervised steps
  double sft_target_accuracy = 0.25; ///< stop SFT once held-out greedy accuracy reaches this
                                     ///< (checked every 25 steps): an imperfect warm-up policy
  int sft_batch = 64;
  double sft_learning_rate = 5e-3;
  std::string sft_checkpoint; ///< load this checkpoint instead of running SFT (if set)
  rl_options rl{};
  std::vector<rl_method> methods{rl_method::grpo_outcome, rl_method::grpo_process, rl_method::ppo};
  int eval_problems = 500;    ///< held-out problems used for greedy accuracy
  double test_fraction = 0.2; ///< held-out share of the 10,000 problems
  std::string out_dir = "arithmetic_rl_out";
  bool isolate = true; ///< run each method in a child process (own peak memory)
  bool plots = true;   ///< write PNG plots when gnuplot is installed
  std::uint64_t seed = 1;
};

/// Summary of one method as printed in the final table.
struct method_summary {
  rl_result result;
  double peak_rss_mb = 0; ///< getrusage ru_maxrss of the process that ran it
};

/// Runs the whole demo, printing to `out`; returns one summary per method.
std::vector<method_summary> run_demo(const demo_options& options, std::ostream& out);

/// The --quick settings: width-32 model, SFT on batches of 32 to the 20 % target (at most 800
/// steps), 30 GRPO-outcome stages of 16 prompts x 8 with mu = 2, accuracy on 200 problems; about
/// 8 s of CPU (the run tests/examples/test_rl_quick.cpp checks).
demo_options quick_options();

/// Writes the final table (markdown) for the summaries.
void print_table(const std::vector<method_summary>& summaries, std::ostream& out);

} // namespace arith

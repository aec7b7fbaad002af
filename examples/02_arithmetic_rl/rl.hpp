// RL from the SFT checkpoint: GRPO (outcome / process supervision) and PPO with a critic, all
// RL maths through rlcore (rl.cpp is the only file of the example that calls rlcore).
#pragma once

#include "model.hpp"
#include "task.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace arith {

enum class rl_method { grpo_outcome, grpo_process, ppo };

/// "grpo-outcome", "grpo-process", "ppo".
const char* method_name(rl_method method);
/// Inverse of method_name; throws std::invalid_argument for an unknown name.
rl_method parse_method(const std::string& name);

/// Options of one RL run (defaults: the demo's).
struct rl_options {
  int steps = 60;                     ///< sampling stages
  int prompts_per_step = 32;          ///< distinct prompts per stage
  int group_size = 8;                 ///< G samples per prompt
  int inner_updates = 2;              ///< mu: optimiser steps per sampling stage
  double learning_rate = 2e-4;        ///< policy AdamW
  double critic_learning_rate = 1e-3; ///< PPO critic AdamW
  double beta = 0.04;                 ///< k3 KL penalty coefficient
  double clip_eps = 0.2;              ///< ratio clip 1 +- eps
  double value_clip = 0.5;            ///< PPO clipped value loss range
  double gamma = 1.0;                 ///< PPO GAE discount
  double lambda = 0.95;               ///< PPO GAE lambda
  double temperature = 1.0;           ///< sampling temperature
  double max_grad_norm = 1.0;         ///< gradient clipping (policy and critic)
  int reference_reset_every = 0;      ///< iterative GRPO: reference := policy every k stages
  int eval_every = 10;                ///< held-out greedy accuracy every k stages (and at the end)
  std::uint64_t seed = 3;
};

/// One sampling stage.
struct step_record {
  int step = 0;
  double seconds = 0;       ///< RL CPU time so far, evaluation excluded
  long sampled_tokens = 0;  ///< valid response tokens sampled so far
  double reward = 0;        ///< mean outcome reward of the stage's samples
  double accuracy = -1;     ///< held-out greedy accuracy (-1 when not evaluated this stage)
  double kl = 0;            ///< mean k3 KL to the reference (first inner update)
  double clip_fraction = 0; ///< fraction of tokens whose ratio clip is active (all updates)
  double tokens_per_second = 0;
  double value_clip_fraction = 0; ///< PPO only
};

/// CPU time (of the training thread) by phase, seconds.
struct phase_times {
  double sampling = 0;   ///< KV-cache generation
  double policy = 0;     ///< policy forward + backward + AdamW
  double critic = 0;     ///< critic forward + backward + AdamW (PPO)
  double reference = 0;  ///< reference forward
  double objective = 0;  ///< rewards, advantages, log-probs, losses and their gradients (rlcore)
  double evaluation = 0; ///< held-out greedy decoding (not part of the RL step)
};

struct rl_result {
  rl_method method = rl_method::grpo_outcome;
  double accuracy_before = 0;
  double accuracy_after = 0;
  double seconds = 0;      ///< RL CPU time, evaluation excluded (sum of the phases)
  double wall_seconds = 0; ///< RL wall time, evaluation excluded
  phase_times time;
  long sampled_tokens = 0;
  std::size_t model_bytes = 0; ///< parameters, gradients, AdamW state and activations held
  std::vector<step_record> steps;
};

/// Runs RL on `train` prompts from the SFT policy (which is also the frozen reference), evaluating
/// greedy accuracy on `eval`. on_step is called after every stage.
rl_result train_rl(const transformer<float>& sft, const std::vector<problem>& train,
                   const std::vector<problem>& eval, rl_method method, const rl_options& options,
                   const std::function<void(const step_record&)>& on_step = {});

} // namespace arith

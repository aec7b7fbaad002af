// The RL glue: the only file of the example that calls rlcore. Every RL formula (advantages,
// log-probs and their gradient, the clipped surrogate with the k3 KL penalty, GAE, the clipped
// value loss) comes from rlcore; this file only moves data between the model and rlcore.
//
// Shape legend: P prompts per stage, G samples per prompt, N = P * G sequences,
// R = response_length slots per sequence, T = sequence_length - 1 model positions, V vocabulary.
// Response token r of a sequence is predicted at model position prompt_length - 1 + r.
#include "rl.hpp"

#include "optimizer.hpp"
#include "sampling.hpp"

#include <rlcore/advantage/gae.hpp>
#include <rlcore/advantage/group.hpp>
#include <rlcore/advantage/process.hpp>
#include <rlcore/backend/host/execution.hpp>
#include <rlcore/objective/grpo.hpp>
#include <rlcore/objective/logits.hpp>
#include <rlcore/objective/policy.hpp>
#include <rlcore/objective/value_loss.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <random>
#include <stdexcept>
#include <type_traits>

namespace arith {

const char* method_name(rl_method method) {
  switch (method) {
  case rl_method::grpo_outcome:
    return "grpo-outcome";
  case rl_method::grpo_process:
    return "grpo-process";
  case rl_method::ppo:
    return "ppo";
  }
  return "?";
}

rl_method parse_method(const std::string& name) {
  for (auto m : {rl_method::grpo_outcome, rl_method::grpo_process, rl_method::ppo}) {
    if (name == method_name(m)) {
      return m;
    }
  }
  throw std::invalid_argument("unknown method '" + name
                              + "' (expected grpo-outcome, grpo-process or ppo)");
}

namespace {

/// Phases are timed in this thread's CPU time: on a shared machine, wall time also counts the
/// time other processes hold the core. (The model is single-threaded, so on an idle machine the
/// two agree.) The total RL time is reported in both.
struct thread_cpu_clock {
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<thread_cpu_clock, duration>;
  static time_point now() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return time_point(duration(static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec));
  }
};
using clock_type = thread_cpu_clock;

double since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

double wall_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

constexpr int P0 = task_shape::prompt_length;
constexpr int R = task_shape::response_length;
constexpr int T = task_shape::sequence_length - 1;

/// Copies the model outputs that predict response slots, (N, T, O) -> (N * R, O).
void gather_response_rows(const float* outputs, int N, int O, std::vector<float>& rows) {
  rows.resize(static_cast<size_t>(N) * R * O);
  for (int i = 0; i < N; ++i) {
    for (int r = 0; r < R; ++r) {
      const float* src = outputs + (static_cast<long>(i) * T + P0 - 1 + r) * O;
      std::copy_n(src, O, rows.data() + (static_cast<long>(i) * R + r) * O);
    }
  }
}

/// Inverse of gather_response_rows for gradients: (N * R, O) -> (N, T, O), zero elsewhere.
void scatter_response_rows(const std::vector<float>& rows, int N, int O, std::vector<float>& out) {
  out.assign(static_cast<size_t>(N) * T * O, 0.0f);
  for (int i = 0; i < N; ++i) {
    for (int r = 0; r < R; ++r) {
      std::copy_n(rows.data() + (static_cast<long>(i) * R + r) * O, O,
                  out.data() + (static_cast<long>(i) * T + P0 - 1 + r) * O);
    }
  }
}

/// One stage's batch: tokens, response mask and the rewards of every kind.
struct rollout {
  int n = 0;
  std::vector<int> inputs;          // (N, T) model input
  std::vector<int> response_ids;    // (N, R)
  std::vector<float> mask;          // (N, R) 1 up to and including the end token
  std::vector<float> scores;        // (N) outcome reward
  std::vector<float> step_rewards;  // (N, R) process reward at each step's token
  std::vector<float> step_end;      // (N, R) 1 where a step ends
  std::vector<float> token_rewards; // (N, R) outcome reward at the last valid token (PPO)
  long valid_tokens = 0;
};

rollout make_rollout(const std::vector<problem>& problems, const std::vector<int>& responses) {
  rollout b;
  b.n = static_cast<int>(problems.size());
  const auto N = static_cast<size_t>(b.n);
  b.inputs.resize(N * T);
  b.response_ids = responses;
  b.mask.assign(N * R, 0.0f);
  b.scores.resize(N);
  b.step_rewards.resize(N * R);
  b.step_end.resize(N * R);
  b.token_rewards.assign(N * R, 0.0f);
  for (size_t i = 0; i < N; ++i) {
    const auto prompt = problems[i].prompt_tokens();
    const int* resp = responses.data() + i * R;
    for (int t = 0; t < T; ++t) {
      b.inputs[i * T + static_cast<size_t>(t)] =
          t < P0 ? prompt[static_cast<size_t>(t)] : resp[t - P0];
    }
    const int len = response_tokens(resp);
    for (int r = 0; r < len; ++r) {
      b.mask[i * R + static_cast<size_t>(r)] = 1.0f;
    }
    b.valid_tokens += len;
    b.scores[i] = static_cast<float>(outcome_reward(problems[i], resp));
    process_rewards(problems[i], resp, b.step_rewards.data() + i * R, b.step_end.data() + i * R);
    b.token_rewards[i * R + static_cast<size_t>(len - 1)] = b.scores[i];
  }
  return b;
}

/// A model with its optimiser.
struct trainee {
  transformer<float> model;
  adamw<float> optimizer;
};

} // namespace

rl_result train_rl(const transformer<float>& sft, const std::vector<problem>& train,
                   const std::vector<problem>& eval, rl_method method, const rl_options& options,
                   const std::function<void(const step_record&)>& on_step) {
  if (options.steps < 0 || options.prompts_per_step < 1 || options.group_size < 1
      || options.inner_updates < 1) {
    throw std::invalid_argument("train_rl: need steps >= 0, prompts, group size and mu >= 1");
  }
  const bool ppo = method == rl_method::ppo;
  const int V = sft.config().outputs;
  const int G = options.group_size;
  const int N = options.prompts_per_step * G;
  std::mt19937_64 rng(options.seed);

  rl_result result;
  result.method = method;
  trainee policy{sft, {}};
  policy.optimizer.options.learning_rate = options.learning_rate;
  transformer<float> reference = sft;
  // Critic: the SFT body (its features) with a fresh scalar head, same size as the policy.
  model_config critic_config = sft.config();
  critic_config.outputs = 1;
  trainee critic{transformer<float>(critic_config, options.seed + 1), {}};
  critic.optimizer.options.learning_rate = options.critic_learning_rate;
  if (ppo) {
    const size_t head = static_cast<size_t>(sft.config().channels + 1) * sft.config().outputs;
    std::copy(sft.params.begin(), sft.params.end() - static_cast<long>(head),
              critic.model.params.begin());
  }

  auto t_eval = clock_type::now();
  result.accuracy_before = greedy_accuracy(policy.model, eval);
  result.time.evaluation += since(t_eval);

  // Per-token buffers (N, R) and their rlcore views.
  std::vector<float> logits_rows, grad_rows, grad_outputs, lp(N * R), old_lp(N * R), ref_lp(N * R),
      advantages(N * R), grad_lp(N * R), values(N * R), old_values(N * R), returns(N * R),
      grad_values(N * R);
  auto view = [N](std::vector<float>& v) { return rlcore::make_matrix_view(v.data(), N, R); };
  const rlcore::uniform_groups groups{G};

  for (int step = 1; step <= options.steps; ++step) {
    const auto t_step = clock_type::now();
    const auto wall_step = std::chrono::steady_clock::now();
    step_record rec;
    rec.step = step;

    // 1. Sample G responses for each of P prompts with the KV cache.
    auto t = clock_type::now();
    std::vector<problem> problems;
    for (int p = 0; p < options.prompts_per_step; ++p) {
      const problem& q = train[static_cast<size_t>(rng() % train.size())];
      problems.insert(problems.end(), static_cast<size_t>(G), q);
    }
    const auto responses =
        sample_responses(policy.model, prompt_batch(problems), N, options.temperature, rng);
    result.time.sampling += since(t);

    t = clock_type::now();
    rollout b = make_rollout(problems, responses);
    const auto mask = rlcore::make_matrix_view(static_cast<const float*>(b.mask.data()), N, R);
    const auto layout = rlcore::padded(mask);
    const auto ids = rlcore::make_matrix_view(static_cast<const int*>(b.response_ids.data()), N, R);
    result.time.objective += since(t);

    // 2. Reference log-probs of the sampled tokens.
    t = clock_type::now();
    reference.forward(b.inputs.data(), N, T);
    gather_response_rows(reference.logits(), N, V, logits_rows);
    result.time.reference += since(t);
    t = clock_type::now();
    rlcore::token_log_probs(layout, rlcore::make_matrix_view(logits_rows.data(), N * R, V), ids,
                            view(ref_lp));
    result.time.objective += since(t);

    // 3. Advantages (PPO: critic values, then GAE).
    if (ppo) {
      t = clock_type::now();
      critic.model.forward(b.inputs.data(), N, T);
      gather_response_rows(critic.model.logits(), N, 1, old_values);
      result.time.critic += since(t);
    }
    t = clock_type::now();
    switch (method) {
    case rl_method::grpo_outcome:
      rlcore::grpo_outcome_advantages(layout, b.scores, groups, view(advantages));
      break;
    case rl_method::grpo_process:
      rlcore::grpo_process_advantages(layout, view(b.step_rewards), view(b.step_end), groups,
                                      view(advantages));
      break;
    case rl_method::ppo: {
      rlcore::gae_options gae;
      gae.gamma = options.gamma;
      gae.lambda = options.lambda;
      gae.whiten = true;
      rlcore::gae_advantages(layout, view(b.token_rewards), view(old_values), view(advantages),
                             view(returns), gae);
      break;
    }
    }
    result.time.objective += since(t);

    // 4. mu updates on this batch. The first forward also gives the old log-probs.
    double clip_sum = 0, value_clip_sum = 0;
    for (int k = 0; k < options.inner_updates; ++k) {
      t = clock_type::now();
      policy.model.forward(b.inputs.data(), N, T);
      gather_response_rows(policy.model.logits(), N, V, logits_rows);
      result.time.policy += since(t);

      t = clock_type::now();
      const auto logits_view = rlcore::make_matrix_view(logits_rows.data(), N * R, V);
      rlcore::token_log_probs(layout, logits_view, ids, view(lp));
      if (k == 0) {
        old_lp = lp;
      }
      rlcore::objective_result obj;
      if (ppo) {
        rlcore::policy_options po;
        po.eps_low = options.clip_eps;
        po.eps_high = options.clip_eps;
        po.kl_beta = options.beta; // k3 by default
        // Template arguments spelled out: clang 14 has no CTAD for aggregates.
        const auto lp_view = view(lp), old_view = view(old_lp), adv_view = view(advantages),
                   ref_view = view(ref_lp);
        using token_view = std::remove_const_t<decltype(lp_view)>;
        const rlcore::policy_inputs<token_view, token_view, token_view, token_view> inputs{
            .log_probs = lp_view,
            .old_log_probs = old_view,
            .advantages = adv_view,
            .ref_log_probs = ref_view};
        obj = rlcore::policy_objective(layout, inputs, view(grad_lp), rlcore::none, po);
      } else {
        rlcore::grpo_options go;
        go.eps = options.clip_eps;
        go.beta = options.beta;
        obj = rlcore::grpo_objective(layout, view(lp), view(old_lp), view(ref_lp), view(advantages),
                                     view(grad_lp), go);
      }
      grad_rows.resize(logits_rows.size());
      rlcore::token_log_probs_backward(layout, logits_view, ids, view(grad_lp),
                                       rlcore::make_matrix_view(grad_rows.data(), N * R, V));
      scatter_response_rows(grad_rows, N, V, grad_outputs);
      result.time.objective += since(t);
      if (k == 0) {
        rec.kl = obj.metrics.kl_penalty_mean;
      }
      clip_sum += obj.metrics.clip_fraction;

      t = clock_type::now();
      policy.model.zero_grad();
      policy.model.backward(grad_outputs.data());
      clip_grad_norm(policy.model.grads, options.max_grad_norm);
      policy.optimizer.step(policy.model.params, policy.model.grads);
      result.time.policy += since(t);

      if (ppo) {
        t = clock_type::now();
        if (k > 0) { // at k == 0 the critic's last forward is the one that gave old_values
          critic.model.forward(b.inputs.data(), N, T);
        }
        gather_response_rows(critic.model.logits(), N, 1, values);
        result.time.critic += since(t);
        t = clock_type::now();
        rlcore::value_loss_options vo;
        vo.clip = options.value_clip;
        const auto vl = rlcore::value_loss(layout, view(values), view(old_values), view(returns),
                                           view(grad_values), vo);
        value_clip_sum += vl.clip_fraction;
        scatter_response_rows(grad_values, N, 1, grad_outputs);
        result.time.objective += since(t);
        t = clock_type::now();
        critic.model.zero_grad();
        critic.model.backward(grad_outputs.data());
        clip_grad_norm(critic.model.grads, options.max_grad_norm);
        critic.optimizer.step(critic.model.params, critic.model.grads);
        result.time.critic += since(t);
      }
    }
    if (options.reference_reset_every > 0 && step % options.reference_reset_every == 0) {
      reference = policy.model;
    }

    const double step_seconds = since(t_step);
    result.seconds += step_seconds;
    result.wall_seconds += wall_since(wall_step);
    result.sampled_tokens += b.valid_tokens;
    double reward = 0;
    for (float s : b.scores) {
      reward += s;
    }
    rec.reward = reward / N;
    rec.clip_fraction = clip_sum / options.inner_updates;
    rec.value_clip_fraction = value_clip_sum / options.inner_updates;
    rec.seconds = result.seconds;
    rec.sampled_tokens = result.sampled_tokens;
    rec.tokens_per_second = static_cast<double>(b.valid_tokens) / step_seconds;
    if (step == options.steps || (options.eval_every > 0 && step % options.eval_every == 0)) {
      t_eval = clock_type::now();
      rec.accuracy = greedy_accuracy(policy.model, eval);
      result.time.evaluation += since(t_eval);
    }
    result.steps.push_back(rec);
    if (on_step) {
      on_step(rec);
    }
  }
  result.accuracy_after =
      result.steps.empty() ? result.accuracy_before : result.steps.back().accuracy;
  result.model_bytes = policy.model.parameter_bytes() + policy.optimizer.bytes()
                       + policy.model.activation_bytes() + reference.parameter_bytes() / 2
                       + reference.activation_bytes();
  if (ppo) {
    result.model_bytes +=
        critic.model.parameter_bytes() + critic.optimizer.bytes() + critic.model.activation_bytes();
  }
  return result;
}

} // namespace arith

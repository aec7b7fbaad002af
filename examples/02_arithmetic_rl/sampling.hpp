// Sampling responses with the KV cache, greedy evaluation, and SFT on the arithmetic task.
#pragma once

#include "model.hpp"
#include "optimizer.hpp"
#include "task.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace arith {

/// Samples B responses of task_shape::response_length tokens after prompts (B, prompt_length),
/// with temperature (0 = greedy argmax). After the first end token a row keeps emitting end
/// tokens (padding). Returns responses (B, response_length). Decoding uses the KV cache: one
/// decode_step per position, prompt included.
template <class S>
std::vector<int> sample_responses(const transformer<S>& model, const std::vector<int>& prompts,
                                  int B, double temperature, std::mt19937_64& rng) {
  const int P = task_shape::prompt_length, R = task_shape::response_length;
  const int V = model.config().outputs;
  auto cache = model.make_cache(B);
  std::vector<S> logits(static_cast<size_t>(B) * V);
  std::vector<int> column(static_cast<size_t>(B));
  std::vector<int> responses(static_cast<size_t>(B) * R, tokenizer::end);
  std::vector<char> done(static_cast<size_t>(B), 0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<double> probs(static_cast<size_t>(V));
  for (int t = 0; t < P + R - 1; ++t) {
    for (int b = 0; b < B; ++b) {
      column[static_cast<size_t>(b)] = t < P ? prompts[static_cast<size_t>(b) * P + t]
                                             : responses[static_cast<size_t>(b) * R + t - P];
    }
    model.decode_step(cache, column.data(), logits.data());
    if (t < P - 1) {
      continue;
    }
    const int r = t - (P - 1); // response position this step predicts
    for (int b = 0; b < B; ++b) {
      int choice = tokenizer::end;
      if (!done[static_cast<size_t>(b)]) {
        const S* z = logits.data() + static_cast<long>(b) * V;
        int best = 0;
        for (int v = 1; v < V; ++v) {
          best = z[v] > z[best] ? v : best;
        }
        choice = best;
        if (temperature > 0) {
          double sum = 0;
          for (int v = 0; v < V; ++v) {
            probs[static_cast<size_t>(v)] = std::exp((z[v] - z[best]) / temperature);
            sum += probs[static_cast<size_t>(v)];
          }
          double u = uniform(rng) * sum;
          for (int v = 0; v < V; ++v) {
            u -= probs[static_cast<size_t>(v)];
            if (u <= 0 || v == V - 1) {
              choice = v;
              break;
            }
          }
        }
        done[static_cast<size_t>(b)] = choice == tokenizer::end ? 1 : 0;
      }
      responses[static_cast<size_t>(b) * R + r] = choice;
    }
  }
  return responses;
}

/// Prompts of problems as one (B, prompt_length) token array.
inline std::vector<int> prompt_batch(const std::vector<problem>& problems) {
  std::vector<int> prompts;
  for (const auto& p : problems) {
    const auto ids = p.prompt_tokens();
    prompts.insert(prompts.end(), ids.begin(), ids.end());
  }
  return prompts;
}

/// Fraction of problems answered exactly right by greedy decoding.
template <class S>
double greedy_accuracy(const transformer<S>& model, const std::vector<problem>& problems) {
  const int B = static_cast<int>(problems.size());
  std::mt19937_64 unused(0);
  const auto responses = sample_responses(model, prompt_batch(problems), B, 0.0, unused);
  double correct = 0;
  for (int b = 0; b < B; ++b) {
    correct +=
        outcome_reward(problems[static_cast<size_t>(b)],
                       responses.data() + static_cast<long>(b) * task_shape::response_length);
  }
  return B > 0 ? correct / B : 0.0;
}

/// One supervised step on problems: model input is the first sequence_length - 1 tokens of
/// prompt + answer; the loss is the mean cross-entropy of the answer tokens up to and including
/// the end token. Clips the gradient norm to clip_norm and applies AdamW. Returns the loss.
template <class S>
double sft_step(transformer<S>& model, adamw<S>& optimizer, const std::vector<problem>& problems,
                double clip_norm) {
  const int B = static_cast<int>(problems.size());
  const int P = task_shape::prompt_length, T = task_shape::sequence_length - 1;
  const int V = model.config().outputs;
  std::vector<int> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  std::vector<S> weight(inputs.size(), S(0));
  for (int b = 0; b < B; ++b) {
    auto seq = problems[static_cast<size_t>(b)].prompt_tokens();
    const auto answer = problems[static_cast<size_t>(b)].answer_tokens();
    seq.insert(seq.end(), answer.begin(), answer.end());
    const int valid = response_tokens(answer.data());
    for (int t = 0; t < T; ++t) {
      inputs[static_cast<size_t>(b) * T + t] = seq[static_cast<size_t>(t)];
      targets[static_cast<size_t>(b) * T + t] = seq[static_cast<size_t>(t) + 1];
      // position t predicts token t + 1; answer token r sits at P + r
      const int r = t + 1 - P;
      weight[static_cast<size_t>(b) * T + t] = r >= 0 && r < valid ? S(1) : S(0);
    }
  }
  model.forward(inputs.data(), B, T);
  std::vector<S> dlogits(static_cast<size_t>(B) * T * V);
  const S loss = crossentropy_forward_backward(dlogits.data(), model.logits(), targets.data(),
                                               weight.data(), B * T, V);
  model.zero_grad();
  model.backward(dlogits.data());
  clip_grad_norm(model.grads, clip_norm);
  optimizer.step(model.params, model.grads);
  return static_cast<double>(loss);
}

} // namespace arith

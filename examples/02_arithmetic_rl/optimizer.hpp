// AdamW with decoupled weight decay, global-norm gradient clipping, and checkpoint save/load.
#pragma once

#include "model.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace arith {

/// AdamW hyper-parameters (defaults: lr 1e-3, betas 0.9 / 0.95, eps 1e-8, weight decay 0.0).
struct adamw_options {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

/// AdamW state for one parameter buffer: m, v (same size as params) and the step count.
template <class S>
struct adamw {
  adamw_options options;
  std::vector<S> m;
  std::vector<S> v;
  long step_count = 0;

  /// One update: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
  /// p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), mhat, vhat bias-corrected.
  void step(std::vector<S>& params, const std::vector<S>& grads) {
    if (m.size() != params.size()) {
      m.assign(params.size(), S(0));
      v.assign(params.size(), S(0));
    }
    ++step_count;
    const double c1 = 1.0 - std::pow(options.beta1, static_cast<double>(step_count));
    const double c2 = 1.0 - std::pow(options.beta2, static_cast<double>(step_count));
    const S b1 = static_cast<S>(options.beta1), b2 = static_cast<S>(options.beta2);
    for (size_t i = 0; i < params.size(); ++i) {
      const S g = grads[i];
      m[i] = b1 * m[i] + (S(1) - b1) * g;
      v[i] = b2 * v[i] + (S(1) - b2) * g * g;
      const double mhat = m[i] / c1, vhat = v[i] / c2;
      params[i] -= static_cast<S>(
          options.learning_rate
          * (mhat / (std::sqrt(vhat) + options.eps) + options.weight_decay * params[i]));
    }
  }
  [[nodiscard]] size_t bytes() const { return (m.size() + v.size()) * sizeof(S); }
};

/// Scales grads so that their global L2 norm is at most max_norm; returns the norm before.
template <class S>
double clip_grad_norm(std::vector<S>& grads, double max_norm) {
  double sum = 0;
  for (S g : grads) {
    sum += static_cast<double>(g) * g;
  }
  const double norm = std::sqrt(sum);
  if (max_norm > 0 && norm > max_norm) {
    const S scale = static_cast<S>(max_norm / norm);
    for (S& g : grads) {
      g *= scale;
    }
  }
  return norm;
}

/// Writes config + parameters (raw bytes, so a load round-trips exactly).
template <class S>
void save_checkpoint(const std::string& path, const transformer<S>& model) {
  std::ofstream out(path, std::ios::binary);
  if (!out) {
    throw std::runtime_error("save_checkpoint: cannot open " + path);
  }
  const std::uint32_t magic = 0x41524c31; // "ARL1"
  const std::uint32_t scalar_bytes = sizeof(S);
  const model_config c = model.config();
  const std::int32_t dims[6] = {c.vocab, c.context, c.channels, c.heads, c.layers, c.outputs};
  const std::uint64_t count = model.params.size();
  out.write(reinterpret_cast<const char*>(&magic), sizeof magic);
  out.write(reinterpret_cast<const char*>(&scalar_bytes), sizeof scalar_bytes);
  out.write(reinterpret_cast<const char*>(dims), sizeof dims);
  out.write(reinterpret_cast<const char*>(&count), sizeof count);
  out.write(reinterpret_cast<const char*>(model.params.data()),
            static_cast<std::streamsize>(count * sizeof(S)));
  if (!out) {
    throw std::runtime_error("save_checkpoint: write failed for " + path);
  }
}

/// Reads a checkpoint written by save_checkpoint (same scalar type) into a new model.
template <class S>
transformer<S> load_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("load_checkpoint: cannot open " + path);
  }
  std::uint32_t magic = 0, scalar_bytes = 0;
  std::int32_t dims[6] = {};
  std::uint64_t count = 0;
  in.read(reinterpret_cast<char*>(&magic), sizeof magic);
  in.read(reinterpret_cast<char*>(&scalar_bytes), sizeof scalar_bytes);
  in.read(reinterpret_cast<char*>(dims), sizeof dims);
  in.read(reinterpret_cast<char*>(&count), sizeof count);
  if (!in || magic != 0x41524c31 || scalar_bytes != sizeof(S)) {
    throw std::runtime_error("load_checkpoint: " + path + " is not a checkpoint of this type");
  }
  transformer<S> model(model_config{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]}, 0);
  if (count != model.params.size()) {
    throw std::runtime_error("load_checkpoint: parameter count mismatch in " + path);
  }
  in.read(reinterpret_cast<char*>(model.params.data()),
          static_cast<std::streamsize>(count * sizeof(S)));
  if (!in) {
    throw std::runtime_error("load_checkpoint: truncated file " + path);
  }
  return model;
}

} // namespace arith

// A tiny decoder-only transformer (GPT-2 shaped), CPU reference implementation.
//
// Shape legend: B sequences, T positions (<= config.context), C channels, NH heads, L layers,
// V vocabulary, OUT head outputs (V for a language model, 1 for a value model / critic).
//
//   x = wte[token] + wpe[position]
//   L times:  x = x + attn_proj(causal_attention(qkv(layernorm1(x))))
//             x = x + fc_proj(gelu(fc(layernorm2(x))))
//   out = head(layernorm_f(x))                          (B, T, OUT)
//
// All parameters live in one buffer (`params`), their gradients in another of the same layout
// (`grads`). forward() saves the activations that backward() needs; backward() accumulates into
// `grads` (call zero_grad() first). decode_step() runs one position for a batch with a KV cache and
// computes exactly what forward() computes at that position.
#pragma once

#include "layers.hpp"

#include <algorithm>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace arith {

/// Sizes of a transformer. outputs = vocab for a policy, 1 for a critic (value head).
struct model_config {
  int vocab = 13;
  int context = 10;
  int channels = 64;
  int heads = 4;
  int layers = 2;
  int outputs = 13;
  bool operator==(const model_config&) const = default;
};

/// Pointers into the one parameter (or gradient) buffer; per-layer tensors are stacked over L.
template <class S>
struct parameter_tensors {
  S* wte;      // (V, C)
  S* wpe;      // (context, C)
  S* ln1w;     // (L, C)
  S* ln1b;     // (L, C)
  S* qkvw;     // (L, 3C, C)
  S* qkvb;     // (L, 3C)
  S* attprojw; // (L, C, C)
  S* attprojb; // (L, C)
  S* ln2w;     // (L, C)
  S* ln2b;     // (L, C)
  S* fcw;      // (L, 4C, C)
  S* fcb;      // (L, 4C)
  S* fcprojw;  // (L, C, 4C)
  S* fcprojb;  // (L, C)
  S* lnfw;     // (C)
  S* lnfb;     // (C)
  S* headw;    // (OUT, C)
  S* headb;    // (OUT)
};

/// Number of scalars of each parameter tensor, in the order of parameter_tensors.
inline std::vector<long> parameter_sizes(const model_config& m) {
  const long V = m.vocab, P = m.context, C = m.channels, L = m.layers, O = m.outputs;
  return {V * C,         P * C, L * C, L * C, L * 3 * C * C, L * 3 * C,
          L * C * C,     L * C, L * C, L * C, L * 4 * C * C, L * 4 * C,
          L * C * 4 * C, L * C, C,     C,     O * C,         O};
}

template <class S>
parameter_tensors<S> point_into(S* base, const model_config& m) {
  const auto sizes = parameter_sizes(m);
  parameter_tensors<S> p{};
  S* cursor = base;
  S** slots[] = {&p.wte,      &p.wpe,      &p.ln1w, &p.ln1b, &p.qkvw,  &p.qkvb,
                 &p.attprojw, &p.attprojb, &p.ln2w, &p.ln2b, &p.fcw,   &p.fcb,
                 &p.fcprojw,  &p.fcprojb,  &p.lnfw, &p.lnfb, &p.headw, &p.headb};
  for (size_t i = 0; i < sizes.size(); ++i) {
    *slots[i] = cursor;
    cursor += sizes[i];
  }
  return p;
}

/// Key/value cache for batched incremental decoding of B sequences.
template <class S>
struct kv_cache {
  int batch = 0;
  int length = 0;   // positions already decoded
  std::vector<S> k; // (L, B, context, C)
  std::vector<S> v; // (L, B, context, C)
};

template <class S>
class transformer {
public:
  explicit transformer(const model_config& config, std::uint64_t seed = 1) : config_(config) {
    if (config.channels % config.heads != 0) {
      throw std::invalid_argument("model_config: channels must be a multiple of heads");
    }
    long total = 0;
    for (long s : parameter_sizes(config)) {
      total += s;
    }
    params.assign(static_cast<size_t>(total), S(0));
    grads.assign(static_cast<size_t>(total), S(0));
    initialize(seed);
  }
  transformer(const transformer& other) : params(other.params), config_(other.config_) {
    grads.assign(params.size(), S(0));
  }
  transformer& operator=(const transformer& other) {
    config_ = other.config_;
    params = other.params;
    grads.assign(params.size(), S(0));
    return *this;
  }

  [[nodiscard]] const model_config& config() const { return config_; }
  [[nodiscard]] parameter_tensors<S> weights() { return point_into(params.data(), config_); }
  [[nodiscard]] parameter_tensors<const S> weights() const {
    return point_into<const S>(params.data(), config_);
  }

  /// GPT-2 initialisation: N(0, 0.02) weights, N(0, 0.02 / sqrt(2 L)) for the residual
  /// projections, zero biases, unit LayerNorm gains. Deterministic for a given seed.
  void initialize(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::fill(params.begin(), params.end(), S(0));
    auto p = weights();
    const auto sizes = parameter_sizes(config_);
    auto fill = [&](S* x, long n, double stddev) {
      for (long i = 0; i < n; ++i) {
        x[i] = static_cast<S>(stddev * normal(rng));
      }
    };
    const double proj = 0.02 / std::sqrt(2.0 * config_.layers);
    fill(p.wte, sizes[0], 0.02);
    fill(p.wpe, sizes[1], 0.01);
    std::fill(p.ln1w, p.ln1w + sizes[2], S(1));
    fill(p.qkvw, sizes[4], 0.02);
    fill(p.attprojw, sizes[6], proj);
    std::fill(p.ln2w, p.ln2w + sizes[8], S(1));
    fill(p.fcw, sizes[10], 0.02);
    fill(p.fcprojw, sizes[12], proj);
    std::fill(p.lnfw, p.lnfw + sizes[14], S(1));
    fill(p.headw, sizes[16], 0.02);
  }

  void zero_grad() { std::fill(grads.begin(), grads.end(), S(0)); }

  /// Runs the model on tokens (B, T), T <= context; logits() then holds (B, T, OUT).
  void forward(const int* tokens, int B, int T) {
    if (T > config_.context || T < 1 || B < 1) {
      throw std::invalid_argument("transformer::forward: need 1 <= T <= context and B >= 1");
    }
    resize(B, T);
    tokens_.assign(tokens, tokens + static_cast<long>(B) * T);
    const int C = config_.channels, NH = config_.heads, L = config_.layers, O = config_.outputs;
    const long N = static_cast<long>(B) * T;
    const auto w = weights();
    encoder_forward(a_.encoded.data(), tokens, w.wte, w.wpe, B, T, C);
    const S* x = a_.encoded.data();
    for (int l = 0; l < L; ++l) {
      layer_activations& a = a_.layer[static_cast<size_t>(l)];
      layernorm_forward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, w.ln1w + l * C,
                        w.ln1b + l * C, static_cast<int>(N), C);
      matmul_forward(a.qkv.data(), a.ln1.data(), w.qkvw + static_cast<long>(l) * 3 * C * C,
                     w.qkvb + l * 3 * C, static_cast<int>(N), C, 3 * C);
      attention_forward(a.atty.data(), a.att.data(), a.qkv.data(), B, T, C, NH);
      matmul_forward(a.attproj.data(), a.atty.data(), w.attprojw + static_cast<long>(l) * C * C,
                     w.attprojb + l * C, static_cast<int>(N), C, C);
      residual_forward(a.residual2.data(), x, a.attproj.data(), N * C);
      layernorm_forward(a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.residual2.data(),
                        w.ln2w + l * C, w.ln2b + l * C, static_cast<int>(N), C);
      matmul_forward(a.fch.data(), a.ln2.data(), w.fcw + static_cast<long>(l) * 4 * C * C,
                     w.fcb + l * 4 * C, static_cast<int>(N), C, 4 * C);
      gelu_forward(a.fch_gelu.data(), a.fch.data(), N * 4 * C);
      matmul_forward(a.fcproj.data(), a.fch_gelu.data(),
                     w.fcprojw + static_cast<long>(l) * 4 * C * C, w.fcprojb + l * C,
                     static_cast<int>(N), 4 * C, C);
      residual_forward(a.residual3.data(), a.residual2.data(), a.fcproj.data(), N * C);
      x = a.residual3.data();
    }
    layernorm_forward(a_.lnf.data(), a_.lnf_mean.data(), a_.lnf_rstd.data(), x, w.lnfw, w.lnfb,
                      static_cast<int>(N), C);
    matmul_forward(a_.logits.data(), a_.lnf.data(), w.headw, w.headb, static_cast<int>(N), C, O);
  }

  /// Logits (or values for OUT = 1) of the last forward: (B, T, OUT).
  [[nodiscard]] const S* logits() const { return a_.logits.data(); }
  [[nodiscard]] int batch() const { return B_; }
  [[nodiscard]] int positions() const { return T_; }

  /// Back-propagates dlogits (B, T, OUT) through the last forward; accumulates into grads.
  void backward(const S* dlogits) {
    const int B = B_, T = T_, C = config_.channels, NH = config_.heads, L = config_.layers;
    const int O = config_.outputs;
    const int N = B * T;
    const long NC = static_cast<long>(N) * C;
    const auto w = weights();
    auto g = point_into(grads.data(), config_);
    // dx: gradient w.r.t. the residual stream, walked from the top down.
    std::vector<S>& dx = d_.residual;
    std::fill(dx.begin(), dx.end(), S(0));
    std::fill(d_.lnf.begin(), d_.lnf.end(), S(0));
    matmul_backward(d_.lnf.data(), g.headw, g.headb, dlogits, a_.lnf.data(), w.headw, N, C, O);
    const S* top =
        L > 0 ? a_.layer[static_cast<size_t>(L - 1)].residual3.data() : a_.encoded.data();
    layernorm_backward(dx.data(), g.lnfw, g.lnfb, d_.lnf.data(), top, w.lnfw, a_.lnf_mean.data(),
                       a_.lnf_rstd.data(), N, C);
    for (int l = L - 1; l >= 0; --l) {
      layer_activations& a = a_.layer[static_cast<size_t>(l)];
      const S* x =
          l > 0 ? a_.layer[static_cast<size_t>(l - 1)].residual3.data() : a_.encoded.data();
      // MLP branch: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2)))). dx is d residual3;
      // it flows unchanged into d residual2 and into the branch.
      zero(d_.fch_gelu);
      zero(d_.fch);
      zero(d_.ln2);
      matmul_backward(d_.fch_gelu.data(), g.fcprojw + static_cast<long>(l) * 4 * C * C,
                      g.fcprojb + l * C, dx.data(), a.fch_gelu.data(),
                      w.fcprojw + static_cast<long>(l) * 4 * C * C, N, 4 * C, C);
      gelu_backward(d_.fch.data(), a.fch.data(), d_.fch_gelu.data(), NC * 4);
      matmul_backward(d_.ln2.data(), g.fcw + static_cast<long>(l) * 4 * C * C, g.fcb + l * 4 * C,
                      d_.fch.data(), a.ln2.data(), w.fcw + static_cast<long>(l) * 4 * C * C, N, C,
                      4 * C);
      layernorm_backward(dx.data(), g.ln2w + l * C, g.ln2b + l * C, d_.ln2.data(),
                         a.residual2.data(), w.ln2w + l * C, a.ln2_mean.data(), a.ln2_rstd.data(),
                         N, C);
      // Attention branch: residual2 = x + attproj(attention(qkv(ln1(x)))).
      zero(d_.atty);
      zero(d_.qkv);
      zero(d_.ln1);
      matmul_backward(d_.atty.data(), g.attprojw + static_cast<long>(l) * C * C, g.attprojb + l * C,
                      dx.data(), a.atty.data(), w.attprojw + static_cast<long>(l) * C * C, N, C, C);
      attention_backward(d_.qkv.data(), d_.atty.data(), a.qkv.data(), a.att.data(), B, T, C, NH);
      matmul_backward(d_.ln1.data(), g.qkvw + static_cast<long>(l) * 3 * C * C, g.qkvb + l * 3 * C,
                      d_.qkv.data(), a.ln1.data(), w.qkvw + static_cast<long>(l) * 3 * C * C, N, C,
                      3 * C);
      layernorm_backward(dx.data(), g.ln1w + l * C, g.ln1b + l * C, d_.ln1.data(), x,
                         w.ln1w + l * C, a.ln1_mean.data(), a.ln1_rstd.data(), N, C);
    }
    encoder_backward(g.wte, g.wpe, dx.data(), tokens_.data(), B, T, C);
  }

  /// Starts a cache for B sequences.
  [[nodiscard]] kv_cache<S> make_cache(int B) const {
    kv_cache<S> cache;
    cache.batch = B;
    const size_t n = static_cast<size_t>(config_.layers) * B * config_.context * config_.channels;
    cache.k.assign(n, S(0));
    cache.v.assign(n, S(0));
    return cache;
  }

  /// Feeds tokens (B) at position cache.length for every sequence and writes out (B, OUT): the
  /// same values forward() gives at that position for the same prefix.
  void decode_step(kv_cache<S>& cache, const int* tokens, S* out) const {
    const int B = cache.batch, pos = cache.length, P = config_.context;
    if (pos >= P) {
      throw std::invalid_argument("transformer::decode_step: the cache is full (context)");
    }
    const int C = config_.channels, NH = config_.heads, L = config_.layers, O = config_.outputs;
    const int hs = C / NH;
    const S scale = S(1) / std::sqrt(S(hs));
    const auto w = weights();
    std::vector<S> x(static_cast<size_t>(B) * C), ln(x.size()), qkv(x.size() * 3), y(x.size()),
        proj(x.size()), fch(x.size() * 4), fcg(x.size() * 4), mean(B), rstd(B),
        scores(static_cast<size_t>(P));
    for (int b = 0; b < B; ++b) {
      encoder_forward(x.data() + static_cast<long>(b) * C, tokens + b, w.wte, w.wpe + pos * C, 1, 1,
                      C);
    }
    for (int l = 0; l < L; ++l) {
      layernorm_forward(ln.data(), mean.data(), rstd.data(), x.data(), w.ln1w + l * C,
                        w.ln1b + l * C, B, C);
      matmul_forward(qkv.data(), ln.data(), w.qkvw + static_cast<long>(l) * 3 * C * C,
                     w.qkvb + l * 3 * C, B, C, 3 * C);
      for (int b = 0; b < B; ++b) {
        S* kc = cache.k.data() + ((static_cast<long>(l) * B + b) * P) * C;
        S* vc = cache.v.data() + ((static_cast<long>(l) * B + b) * P) * C;
        std::copy_n(qkv.data() + static_cast<long>(b) * 3 * C + C, C,
                    kc + static_cast<long>(pos) * C);
        std::copy_n(qkv.data() + static_cast<long>(b) * 3 * C + 2 * C, C,
                    vc + static_cast<long>(pos) * C);
        for (int h = 0; h < NH; ++h) {
          const S* q = qkv.data() + static_cast<long>(b) * 3 * C + h * hs;
          S maxval = -1e30f;
          for (int t2 = 0; t2 <= pos; ++t2) {
            const S* k = kc + static_cast<long>(t2) * C + h * hs;
            S dot = 0;
            for (int i = 0; i < hs; ++i) {
              dot += q[i] * k[i];
            }
            scores[static_cast<size_t>(t2)] = dot * scale;
            maxval = std::max(maxval, scores[static_cast<size_t>(t2)]);
          }
          S sum = 0;
          for (int t2 = 0; t2 <= pos; ++t2) {
            scores[static_cast<size_t>(t2)] = std::exp(scores[static_cast<size_t>(t2)] - maxval);
            sum += scores[static_cast<size_t>(t2)];
          }
          S* o = y.data() + static_cast<long>(b) * C + h * hs;
          std::fill(o, o + hs, S(0));
          for (int t2 = 0; t2 <= pos; ++t2) {
            const S a = scores[static_cast<size_t>(t2)] / sum;
            const S* v = vc + static_cast<long>(t2) * C + h * hs;
            for (int i = 0; i < hs; ++i) {
              o[i] += a * v[i];
            }
          }
        }
      }
      matmul_forward(proj.data(), y.data(), w.attprojw + static_cast<long>(l) * C * C,
                     w.attprojb + l * C, B, C, C);
      residual_forward(x.data(), x.data(), proj.data(), static_cast<long>(B) * C);
      layernorm_forward(ln.data(), mean.data(), rstd.data(), x.data(), w.ln2w + l * C,
                        w.ln2b + l * C, B, C);
      matmul_forward(fch.data(), ln.data(), w.fcw + static_cast<long>(l) * 4 * C * C,
                     w.fcb + l * 4 * C, B, C, 4 * C);
      gelu_forward(fcg.data(), fch.data(), static_cast<long>(B) * 4 * C);
      matmul_forward(proj.data(), fcg.data(), w.fcprojw + static_cast<long>(l) * 4 * C * C,
                     w.fcprojb + l * C, B, 4 * C, C);
      residual_forward(x.data(), x.data(), proj.data(), static_cast<long>(B) * C);
    }
    layernorm_forward(ln.data(), mean.data(), rstd.data(), x.data(), w.lnfw, w.lnfb, B, C);
    matmul_forward(out, ln.data(), w.headw, w.headb, B, C, O);
    cache.length += 1;
  }

  /// Bytes held by parameters and gradients.
  [[nodiscard]] size_t parameter_bytes() const { return 2 * params.size() * sizeof(S); }
  /// Bytes held by saved activations and their gradients (for the largest batch seen).
  [[nodiscard]] size_t activation_bytes() const { return activation_bytes_; }

  std::vector<S> params; // all parameters, layout of parameter_tensors
  std::vector<S> grads;  // same layout as params

private:
  struct layer_activations {
    std::vector<S> ln1, ln1_mean, ln1_rstd, qkv, atty, att, attproj, residual2, ln2, ln2_mean,
        ln2_rstd, fch, fch_gelu, fcproj, residual3;
  };
  struct activations {
    std::vector<S> encoded, lnf, lnf_mean, lnf_rstd, logits;
    std::vector<layer_activations> layer;
  };
  struct activation_grads {
    std::vector<S> residual, lnf, ln1, qkv, atty, ln2, fch, fch_gelu;
  };

  static void zero(std::vector<S>& v) { std::fill(v.begin(), v.end(), S(0)); }

  void resize(int B, int T) {
    if (B == B_ && T == T_) {
      return;
    }
    B_ = B;
    T_ = T;
    const size_t N = static_cast<size_t>(B) * T, C = static_cast<size_t>(config_.channels);
    const size_t NH = static_cast<size_t>(config_.heads);
    size_t count = 0;
    auto sized = [&count](std::vector<S>& v, size_t n) {
      v.assign(n, S(0));
      count += n;
    };
    sized(a_.encoded, N * C);
    a_.layer.resize(static_cast<size_t>(config_.layers));
    for (auto& a : a_.layer) {
      sized(a.ln1, N * C);
      sized(a.ln1_mean, N);
      sized(a.ln1_rstd, N);
      sized(a.qkv, N * 3 * C);
      sized(a.atty, N * C);
      sized(a.att, N * NH * static_cast<size_t>(T));
      sized(a.attproj, N * C);
      sized(a.residual2, N * C);
      sized(a.ln2, N * C);
      sized(a.ln2_mean, N);
      sized(a.ln2_rstd, N);
      sized(a.fch, N * 4 * C);
      sized(a.fch_gelu, N * 4 * C);
      sized(a.fcproj, N * C);
      sized(a.residual3, N * C);
    }
    sized(a_.lnf, N * C);
    sized(a_.lnf_mean, N);
    sized(a_.lnf_rstd, N);
    sized(a_.logits, N * static_cast<size_t>(config_.outputs));
    sized(d_.residual, N * C);
    sized(d_.lnf, N * C);
    sized(d_.ln1, N * C);
    sized(d_.qkv, N * 3 * C);
    sized(d_.atty, N * C);
    sized(d_.ln2, N * C);
    sized(d_.fch, N * 4 * C);
    sized(d_.fch_gelu, N * 4 * C);
    activation_bytes_ = count * sizeof(S);
  }

  model_config config_;
  int B_ = 0;
  int T_ = 0;
  std::vector<int> tokens_;
  activations a_;
  activation_grads d_;
  size_t activation_bytes_ = 0;
};

} // namespace arith

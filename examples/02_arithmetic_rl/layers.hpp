// The layers of the tiny transformer, each a forward/backward pair (llm.c style).
//
// Shape legend
//   B   sequences in the batch          T   positions (context length)
//   N   rows = B * T                    C   channels (model width)
//   NH  attention heads                 hs  head size = C / NH
//   OC  output channels of a matmul     V   vocabulary size
//
// Conventions: all tensors are contiguous row-major arrays; forward overwrites its outputs;
// backward ACCUMULATES (+=) into every gradient it writes, so a gradient buffer must be zeroed
// once before a backward pass and residual branches simply add into the same buffer.
// Every function is a template over the scalar type (float for training, double for the
// finite-difference tests).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <vector>

namespace arith {

template <class S>
using row_major = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using matrix_map = Eigen::Map<row_major<S>>;
template <class S>
using const_matrix_map = Eigen::Map<const row_major<S>>;

/// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :].  tokens (B, T), wte (V, C), wpe (T, C).
template <class S>
void encoder_forward(S* out, const int* tokens, const S* wte, const S* wpe, int B, int T, int C) {
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      S* o = out + (static_cast<long>(b) * T + t) * C;
      const S* e = wte + static_cast<long>(tokens[b * T + t]) * C;
      const S* p = wpe + static_cast<long>(t) * C;
      for (int c = 0; c < C; ++c) {
        o[c] = e[c] + p[c];
      }
    }
  }
}

/// dwte[tokens[b, t], :] += dout[b, t, :]; dwpe[t, :] += dout[b, t, :].
template <class S>
void encoder_backward(S* dwte, S* dwpe, const S* dout, const int* tokens, int B, int T, int C) {
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const S* d = dout + (static_cast<long>(b) * T + t) * C;
      S* de = dwte + static_cast<long>(tokens[b * T + t]) * C;
      S* dp = dwpe + static_cast<long>(t) * C;
      for (int c = 0; c < C; ++c) {
        de[c] += d[c];
        dp[c] += d[c];
      }
    }
  }
}

/// LayerNorm over the last axis: out = (x - mean) * rstd * weight + bias, with
/// rstd = 1 / sqrt(var + 1e-5) (population variance). inp/out (N, C); mean, rstd (N) are saved
/// for the backward pass.
template <class S>
void layernorm_forward(S* out, S* mean, S* rstd, const S* inp, const S* weight, const S* bias,
                       int N, int C) {
  const S eps = S(1e-5);
  for (int n = 0; n < N; ++n) {
    const S* x = inp + static_cast<long>(n) * C;
    S m = 0;
    for (int c = 0; c < C; ++c) {
      m += x[c];
    }
    m /= S(C);
    S v = 0;
    for (int c = 0; c < C; ++c) {
      v += (x[c] - m) * (x[c] - m);
    }
    v /= S(C);
    const S r = S(1) / std::sqrt(v + eps);
    S* o = out + static_cast<long>(n) * C;
    for (int c = 0; c < C; ++c) {
      o[c] = (x[c] - m) * r * weight[c] + bias[c];
    }
    mean[n] = m;
    rstd[n] = r;
  }
}

/// Gradient of layernorm_forward. With xhat = (x - mean) * rstd and g = dout * weight:
/// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight += dout * xhat; dbias += dout.
template <class S>
void layernorm_backward(S* dinp, S* dweight, S* dbias, const S* dout, const S* inp, const S* weight,
                        const S* mean, const S* rstd, int N, int C) {
  for (int n = 0; n < N; ++n) {
    const S* x = inp + static_cast<long>(n) * C;
    const S* d = dout + static_cast<long>(n) * C;
    S* dx = dinp + static_cast<long>(n) * C;
    S g_mean = 0;
    S gx_mean = 0;
    for (int c = 0; c < C; ++c) {
      const S xhat = (x[c] - mean[n]) * rstd[n];
      const S g = d[c] * weight[c];
      g_mean += g;
      gx_mean += g * xhat;
    }
    g_mean /= S(C);
    gx_mean /= S(C);
    for (int c = 0; c < C; ++c) {
      const S xhat = (x[c] - mean[n]) * rstd[n];
      const S g = d[c] * weight[c];
      dbias[c] += d[c];
      dweight[c] += d[c] * xhat;
      dx[c] += rstd[n] * (g - g_mean - xhat * gx_mean);
    }
  }
}

/// Affine map: out = inp * weight^T + bias. inp (N, C), weight (OC, C), bias (OC) or null,
/// out (N, OC).
template <class S>
void matmul_forward(S* out, const S* inp, const S* weight, const S* bias, int N, int C, int OC) {
  matrix_map<S> o(out, N, OC);
  o.noalias() = const_matrix_map<S>(inp, N, C) * const_matrix_map<S>(weight, OC, C).transpose();
  if (bias != nullptr) {
    o.rowwise() += Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(bias, OC);
  }
}

/// Gradient of matmul_forward: dinp += dout * weight; dweight += dout^T * inp; dbias += sum_n dout.
template <class S>
void matmul_backward(S* dinp, S* dweight, S* dbias, const S* dout, const S* inp, const S* weight,
                     int N, int C, int OC) {
  const_matrix_map<S> d(dout, N, OC);
  matrix_map<S>(dinp, N, C).noalias() += d * const_matrix_map<S>(weight, OC, C);
  matrix_map<S>(dweight, OC, C).noalias() += d.transpose() * const_matrix_map<S>(inp, N, C);
  if (dbias != nullptr) {
    Eigen::Map<Eigen::Matrix<S, 1, Eigen::Dynamic>>(dbias, OC) += d.colwise().sum();
  }
}

/// Causal multi-head self-attention. inp (B, T, 3C) holds q, k, v side by side; out (B, T, C);
/// att (B, NH, T, T) saves the softmax weights (zero above the diagonal) for the backward pass.
/// out[b, t, h] = sum_{t2 <= t} att[b, h, t, t2] * v[b, t2, h],
/// att[b, h, t, :] = softmax_{t2 <= t}(q[b, t, h] . k[b, t2, h] / sqrt(hs)).
template <class S>
void attention_forward(S* out, S* att, const S* inp, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const S scale = S(1) / std::sqrt(S(hs));
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < NH; ++h) {
        const S* q = inp + (static_cast<long>(b) * T + t) * 3 * C + h * hs;
        S* a = att + ((static_cast<long>(b) * NH + h) * T + t) * T;
        S maxval = -1e30f;
        for (int t2 = 0; t2 <= t; ++t2) {
          const S* k = inp + (static_cast<long>(b) * T + t2) * 3 * C + C + h * hs;
          S dot = 0;
          for (int i = 0; i < hs; ++i) {
            dot += q[i] * k[i];
          }
          a[t2] = dot * scale;
          maxval = a[t2] > maxval ? a[t2] : maxval;
        }
        S sum = 0;
        for (int t2 = 0; t2 <= t; ++t2) {
          a[t2] = std::exp(a[t2] - maxval);
          sum += a[t2];
        }
        for (int t2 = 0; t2 < T; ++t2) {
          a[t2] = t2 <= t ? a[t2] / sum : S(0);
        }
        S* o = out + (static_cast<long>(b) * T + t) * C + h * hs;
        for (int i = 0; i < hs; ++i) {
          o[i] = 0;
        }
        for (int t2 = 0; t2 <= t; ++t2) {
          const S* v = inp + (static_cast<long>(b) * T + t2) * 3 * C + 2 * C + h * hs;
          for (int i = 0; i < hs; ++i) {
            o[i] += a[t2] * v[i];
          }
        }
      }
    }
  }
}

/// Gradient of attention_forward into dinp (B, T, 3C). Through the softmax:
/// dpre[t2] = att[t2] * (datt[t2] - sum_u att[u] * datt[u]).
template <class S>
void attention_backward(S* dinp, const S* dout, const S* inp, const S* att, int B, int T, int C,
                        int NH) {
  const int hs = C / NH;
  const S scale = S(1) / std::sqrt(S(hs));
  std::vector<S> datt(static_cast<size_t>(T));
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < NH; ++h) {
        const S* a = att + ((static_cast<long>(b) * NH + h) * T + t) * T;
        const S* d = dout + (static_cast<long>(b) * T + t) * C + h * hs;
        const S* q = inp + (static_cast<long>(b) * T + t) * 3 * C + h * hs;
        S* dq = dinp + (static_cast<long>(b) * T + t) * 3 * C + h * hs;
        S weighted = 0;
        for (int t2 = 0; t2 <= t; ++t2) {
          const S* v = inp + (static_cast<long>(b) * T + t2) * 3 * C + 2 * C + h * hs;
          S* dv = dinp + (static_cast<long>(b) * T + t2) * 3 * C + 2 * C + h * hs;
          S dot = 0;
          for (int i = 0; i < hs; ++i) {
            dot += d[i] * v[i];
            dv[i] += a[t2] * d[i];
          }
          datt[t2] = dot;
          weighted += a[t2] * dot;
        }
        for (int t2 = 0; t2 <= t; ++t2) {
          const S dpre = a[t2] * (datt[t2] - weighted) * scale;
          const S* k = inp + (static_cast<long>(b) * T + t2) * 3 * C + C + h * hs;
          S* dk = dinp + (static_cast<long>(b) * T + t2) * 3 * C + C + h * hs;
          for (int i = 0; i < hs; ++i) {
            dq[i] += dpre * k[i];
            dk[i] += dpre * q[i];
          }
        }
      }
    }
  }
}

/// GELU, tanh approximation: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). inp/out (N).
template <class S>
void gelu_forward(S* out, const S* inp, long N) {
  const S k = S(0.7978845608028654); // sqrt(2 / pi)
  for (long i = 0; i < N; ++i) {
    const S x = inp[i];
    out[i] = S(0.5) * x * (S(1) + std::tanh(k * (x + S(0.044715) * x * x * x)));
  }
}

/// Gradient of gelu_forward: dinp += dout * d/dx gelu(x).
template <class S>
void gelu_backward(S* dinp, const S* inp, const S* dout, long N) {
  const S k = S(0.7978845608028654);
  for (long i = 0; i < N; ++i) {
    const S x = inp[i];
    const S u = k * (x + S(0.044715) * x * x * x);
    const S th = std::tanh(u);
    const S sech2 = S(1) - th * th;
    const S local =
        S(0.5) * (S(1) + th) + S(0.5) * x * sech2 * k * (S(1) + S(3 * 0.044715) * x * x);
    dinp[i] += local * dout[i];
  }
}

/// out = a + b (N).
template <class S>
void residual_forward(S* out, const S* a, const S* b, long N) {
  for (long i = 0; i < N; ++i) {
    out[i] = a[i] + b[i];
  }
}

/// da += dout; db += dout.
template <class S>
void residual_backward(S* da, S* db, const S* dout, long N) {
  for (long i = 0; i < N; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

/// Masked next-token cross-entropy from logits (N, V) and targets (N); rows with weight[n] == 0
/// are skipped. loss = sum_n w[n] * (logsumexp(z_n) - z_n[target_n]) / sum_n w[n].
/// dlogits (N, V) is overwritten with d loss / d logits = w[n] (softmax(z_n) - onehot) / sum w.
template <class S>
S crossentropy_forward_backward(S* dlogits, const S* logits, const int* targets, const S* weight,
                                int N, int V) {
  S total_weight = 0;
  for (int n = 0; n < N; ++n) {
    total_weight += weight[n];
  }
  S loss = 0;
  for (int n = 0; n < N; ++n) {
    const S* z = logits + static_cast<long>(n) * V;
    S* dz = dlogits + static_cast<long>(n) * V;
    if (weight[n] == S(0) || total_weight == S(0)) {
      std::fill(dz, dz + V, S(0));
      continue;
    }
    S maxval = z[0];
    for (int v = 1; v < V; ++v) {
      maxval = z[v] > maxval ? z[v] : maxval;
    }
    S sum = 0;
    for (int v = 0; v < V; ++v) {
      sum += std::exp(z[v] - maxval);
    }
    const S lse = maxval + std::log(sum);
    loss += weight[n] * (lse - z[targets[n]]) / total_weight;
    for (int v = 0; v < V; ++v) {
      const S p = std::exp(z[v] - lse);
      dz[v] = weight[n] * (p - (v == targets[n] ? S(1) : S(0))) / total_weight;
    }
  }
  return loss;
}

} // namespace arith

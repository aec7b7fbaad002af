// Every layer's backward against central finite differences in double precision.
// For a layer out = f(in, params) and a fixed random upstream gradient w, the scalar
// L = sum(w * out) has dL/din = backward(dout = w); we perturb each input by +-h and compare.
#include "layers.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

using namespace arith;

namespace {

std::vector<double> random_vector(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) {
    x = normal(rng);
  }
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    s += a[i] * b[i];
  }
  return s;
}

// Compares analytic gradient `grad` of scalar `loss()` w.r.t. `x` with central differences.
void check_gradient(std::vector<double>& x, const std::vector<double>& grad,
                    const std::function<double()>& loss, double tolerance = 1e-7) {
  REQUIRE(grad.size() == x.size());
  const double h = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2 * h);
    INFO("index " << i << " analytic " << grad[i] << " numeric " << numeric);
    CHECK(std::abs(grad[i] - numeric) <= tolerance * (1.0 + std::abs(numeric)));
  }
}

} // namespace

TEST_CASE("layernorm: hand-computed value and finite-difference gradient") {
  // x = (1, 2, 3): mean 2, population var 2/3, xhat = (-1, 0, 1) * sqrt(3/2) (eps 1e-5 aside).
  std::vector<double> x{1, 2, 3}, w{1, 1, 1}, b{0, 0.5, 0}, out(3), mean(1), rstd(1);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), 1, 3);
  CHECK(mean[0] == doctest::Approx(2.0));
  CHECK(out[0] == doctest::Approx(-std::sqrt(1.5)).epsilon(1e-5));
  CHECK(out[1] == doctest::Approx(0.5));
  CHECK(out[2] == doctest::Approx(std::sqrt(1.5)).epsilon(1e-5));

  std::mt19937_64 rng(1);
  const int N = 3, C = 5;
  auto in = random_vector(N * C, rng), weight = random_vector(C, rng), bias = random_vector(C, rng);
  const auto upstream = random_vector(N * C, rng);
  std::vector<double> o(N * C), m(N), r(N);
  auto loss = [&] {
    layernorm_forward(o.data(), m.data(), r.data(), in.data(), weight.data(), bias.data(), N, C);
    return dot(o, upstream);
  };
  loss();
  std::vector<double> din(N * C, 0.0), dw(C, 0.0), db(C, 0.0);
  layernorm_backward(din.data(), dw.data(), db.data(), upstream.data(), in.data(), weight.data(),
                     m.data(), r.data(), N, C);
  check_gradient(in, din, loss);
  check_gradient(weight, dw, loss);
  check_gradient(bias, db, loss);
}

TEST_CASE("matmul: value and gradients; backward accumulates") {
  // [1 2] * [[1 0], [0 1], [1 1]]^T + (0, 0, 1) = (1, 2, 4)
  std::vector<double> x{1, 2}, w{1, 0, 0, 1, 1, 1}, b{0, 0, 1}, out(3);
  matmul_forward(out.data(), x.data(), w.data(), b.data(), 1, 2, 3);
  CHECK(out == std::vector<double>{1, 2, 4});

  std::mt19937_64 rng(2);
  const int N = 4, C = 3, OC = 5;
  auto in = random_vector(N * C, rng), weight = random_vector(OC * C, rng),
       bias = random_vector(OC, rng);
  const auto upstream = random_vector(N * OC, rng);
  std::vector<double> o(N * OC);
  auto loss = [&] {
    matmul_forward(o.data(), in.data(), weight.data(), bias.data(), N, C, OC);
    return dot(o, upstream);
  };
  std::vector<double> din(N * C, 0.0), dw(OC * C, 0.0), db(OC, 0.0);
  matmul_backward(din.data(), dw.data(), db.data(), upstream.data(), in.data(), weight.data(), N, C,
                  OC);
  check_gradient(in, din, loss);
  check_gradient(weight, dw, loss);
  check_gradient(bias, db, loss);
  // A second backward adds the same amount again.
  const auto once = dw;
  matmul_backward(din.data(), dw.data(), db.data(), upstream.data(), in.data(), weight.data(), N, C,
                  OC);
  for (size_t i = 0; i < dw.size(); ++i) {
    CHECK(dw[i] == doctest::Approx(2 * once[i]));
  }
}

TEST_CASE("causal attention: first position copies v; finite-difference gradient") {
  // At t = 0 only position 0 is visible: the output is v[0] exactly, whatever q and k are.
  std::mt19937_64 rng(3);
  const int B = 2, T = 4, C = 6, NH = 2;
  auto qkv = random_vector(B * T * 3 * C, rng);
  std::vector<double> out(B * T * C), att(B * NH * T * T);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  for (int c = 0; c < C; ++c) {
    CHECK(out[c] == doctest::Approx(qkv[2 * C + c]));
  }
  // Causality: weights above the diagonal are exactly 0, rows sum to 1.
  for (int t = 0; t < T; ++t) {
    double sum = 0;
    for (int t2 = 0; t2 < T; ++t2) {
      sum += att[t * T + t2];
      if (t2 > t) {
        CHECK(att[t * T + t2] == 0.0);
      }
    }
    CHECK(sum == doctest::Approx(1.0));
  }
  const auto upstream = random_vector(B * T * C, rng);
  auto loss = [&] {
    attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return dot(out, upstream);
  };
  loss();
  std::vector<double> dqkv(qkv.size(), 0.0);
  attention_backward(dqkv.data(), upstream.data(), qkv.data(), att.data(), B, T, C, NH);
  check_gradient(qkv, dqkv, loss);
}

TEST_CASE("gelu, residual, encoder: values and gradients") {
  std::vector<double> zero{0.0}, g(1);
  gelu_forward(g.data(), zero.data(), 1);
  CHECK(g[0] == 0.0);
  std::mt19937_64 rng(4);
  auto x = random_vector(20, rng, 2.0);
  const auto upstream = random_vector(20, rng);
  std::vector<double> out(20);
  auto gelu_loss = [&] {
    gelu_forward(out.data(), x.data(), 20);
    return dot(out, upstream);
  };
  std::vector<double> dx(20, 0.0);
  gelu_backward(dx.data(), x.data(), upstream.data(), 20);
  check_gradient(x, dx, gelu_loss);

  auto a = random_vector(6, rng), b = random_vector(6, rng);
  const auto up6 = random_vector(6, rng);
  std::vector<double> r(6), da(6, 0.0), dbv(6, 0.0);
  auto residual_loss = [&] {
    residual_forward(r.data(), a.data(), b.data(), 6);
    return dot(r, up6);
  };
  residual_backward(da.data(), dbv.data(), up6.data(), 6);
  check_gradient(a, da, residual_loss);
  check_gradient(b, dbv, residual_loss);

  const int B = 2, T = 3, C = 4, V = 5;
  const std::vector<int> tokens{1, 4, 1, 0, 2, 2}; // repeated ids accumulate
  auto wte = random_vector(V * C, rng), wpe = random_vector(T * C, rng);
  const auto upe = random_vector(B * T * C, rng);
  std::vector<double> e(B * T * C), dwte(V * C, 0.0), dwpe(T * C, 0.0);
  auto encoder_loss = [&] {
    encoder_forward(e.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return dot(e, upe);
  };
  encoder_backward(dwte.data(), dwpe.data(), upe.data(), tokens.data(), B, T, C);
  check_gradient(wte, dwte, encoder_loss);
  check_gradient(wpe, dwpe, encoder_loss);
}

TEST_CASE("cross-entropy: uniform logits give log V; gradient matches finite differences") {
  std::vector<double> z(4, 0.0), dz(4);
  const std::vector<int> target{2};
  const std::vector<double> one{1.0};
  CHECK(crossentropy_forward_backward(dz.data(), z.data(), target.data(), one.data(), 1, 4)
        == doctest::Approx(std::log(4.0)));
  CHECK(dz[2] == doctest::Approx(0.25 - 1.0));

  std::mt19937_64 rng(5);
  const int N = 3, V = 5;
  auto logits = random_vector(N * V, rng, 3.0);
  const std::vector<int> targets{0, 4, 2};
  const std::vector<double> weight{1.0, 0.0, 1.0}; // the middle row is skipped
  std::vector<double> d(N * V);
  auto loss = [&] {
    std::vector<double> scratch(N * V);
    return crossentropy_forward_backward(scratch.data(), logits.data(), targets.data(),
                                         weight.data(), N, V);
  };
  crossentropy_forward_backward(d.data(), logits.data(), targets.data(), weight.data(), N, V);
  for (int v = 0; v < V; ++v) {
    CHECK(d[V + v] == 0.0);
  }
  check_gradient(logits, d, loss);
}

// Layout forms: padded and packed batches with masks. Masked token slots give exactly 0 value and
// 0 gradient even when their logits are inf or NaN; valid slots equal the flat computation.
#include "logits_reference.hpp"

#include <rlcore/objective/logits.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using rlcore::index_t;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

// N = 2 sequences of T = 3 slots, V = 4. Slots (0, 2) and (1, 0) are masked (an interior hole and
// a leading one); their logits rows (2 and 3) hold inf, -inf and NaN.
struct batch {
  static constexpr index_t vocab = 4;
  std::vector<double> logits;
  std::vector<double> ref;
  std::vector<int> ids{1, 3, 99, -5, 0, 2}; // the masked slots hold out-of-range ids: not read
  std::vector<std::uint8_t> mask{1, 1, 0, 0, 1, 1};
  batch()
      : logits(logits_ref::random_logits(24, 3.0, 41)),
        ref(logits_ref::random_logits(24, 3.0, 42)) {
    for (index_t row : {2, 3}) {
      for (index_t v = 0; v < vocab; ++v) {
        const auto k = static_cast<std::size_t>(row * vocab + v);
        logits[k] = v == 0 ? inf : (v == 1 ? -inf : std::nan(""));
        ref[k] = v == 2 ? inf : std::nan("");
      }
    }
  }
};

bool all_finite(const std::vector<double>& v) {
  for (double x : v) {
    if (!std::isfinite(x)) {
      return false;
    }
  }
  return true;
}

// The flat computation of row `slot` alone.
void flat_row(const batch& b, index_t slot, double& lp, double& h, double& kl,
              std::vector<double>& grad_token, std::vector<double>& grad_kl,
              const std::vector<double>& g) {
  const auto z = rlcore::make_matrix_view(b.logits.data() + slot * batch::vocab, 1, batch::vocab);
  const auto q = rlcore::make_matrix_view(b.ref.data() + slot * batch::vocab, 1, batch::vocab);
  const std::vector<int> id{b.ids[static_cast<std::size_t>(slot)]};
  std::vector<double> lp1(1);
  std::vector<double> h1(1);
  std::vector<double> kl1(1);
  rlcore::token_log_probs(z, id, lp1, h1);
  rlcore::full_kl_from_logits(z, q, kl1);
  const std::vector<double> g1{g[static_cast<std::size_t>(slot)]};
  grad_token.assign(batch::vocab, 0.0);
  grad_kl.assign(batch::vocab, 0.0);
  rlcore::token_log_probs_backward(z, id, g1, g1,
                                   rlcore::make_matrix_view(grad_token.data(), 1, batch::vocab));
  rlcore::full_kl_from_logits_backward(z, q, g1,
                                       rlcore::make_matrix_view(grad_kl.data(), 1, batch::vocab));
  lp = lp1[0];
  h = h1[0];
  kl = kl1[0];
}

template <class Layout, class MakeTokenTensor>
void check_layout(const Layout& layout, MakeTokenTensor make) {
  const batch b;
  const auto z = rlcore::make_matrix_view(b.logits.data(), 6, batch::vocab);
  const auto q = rlcore::make_matrix_view(b.ref.data(), 6, batch::vocab);
  std::vector<double> lp(6, 7.0);
  std::vector<double> h(6, 7.0);
  std::vector<double> kl(6, 7.0);
  const std::vector<double> g{1.0, -2.0, 5.0, 5.0, 0.5, 3.0};
  std::vector<double> grad_token(24, 7.0);
  std::vector<double> grad_kl(24, 7.0);
  rlcore::token_log_probs(layout, z, make(b.ids.data()), make(lp.data()), make(h.data()));
  rlcore::full_kl_from_logits(layout, z, q, make(kl.data()));
  rlcore::token_log_probs_backward(layout, z, make(b.ids.data()), make(g.data()), make(g.data()),
                                   rlcore::make_matrix_view(grad_token.data(), 6, 4));
  rlcore::full_kl_from_logits_backward(layout, z, q, make(g.data()),
                                       rlcore::make_matrix_view(grad_kl.data(), 6, 4));
  CHECK(all_finite(lp));
  CHECK(all_finite(h));
  CHECK(all_finite(kl));
  CHECK(all_finite(grad_token));
  CHECK(all_finite(grad_kl));
  for (index_t slot = 0; slot < 6; ++slot) {
    const auto s = static_cast<std::size_t>(slot);
    INFO("slot ", slot);
    if (b.mask[s] == 0) {
      CHECK(lp[s] == 0.0);
      CHECK(h[s] == 0.0);
      CHECK(kl[s] == 0.0);
      for (index_t v = 0; v < 4; ++v) {
        CHECK(grad_token[static_cast<std::size_t>(slot * 4 + v)] == 0.0);
        CHECK(grad_kl[static_cast<std::size_t>(slot * 4 + v)] == 0.0);
      }
      continue;
    }
    double lp1 = 0;
    double h1 = 0;
    double kl1 = 0;
    std::vector<double> gt;
    std::vector<double> gk;
    flat_row(b, slot, lp1, h1, kl1, gt, gk, g);
    CHECK(lp[s] == lp1);
    CHECK(h[s] == h1);
    CHECK(kl[s] == kl1);
    for (index_t v = 0; v < 4; ++v) {
      CHECK(grad_token[static_cast<std::size_t>(slot * 4 + v)] == gt[static_cast<std::size_t>(v)]);
      CHECK(grad_kl[static_cast<std::size_t>(slot * 4 + v)] == gk[static_cast<std::size_t>(v)]);
    }
  }
  // Accumulating leaves masked rows untouched.
  std::vector<double> acc(24, 7.0);
  rlcore::logits_options accumulate;
  accumulate.accumulate_gradient = true;
  rlcore::token_log_probs_backward(layout, z, make(b.ids.data()), make(g.data()),
                                   rlcore::make_matrix_view(acc.data(), 6, 4), accumulate);
  for (index_t v = 0; v < 4; ++v) {
    CHECK(acc[static_cast<std::size_t>(2 * 4 + v)] == 7.0);
    CHECK(acc[static_cast<std::size_t>(3 * 4 + v)] == 7.0);
  }
}

} // namespace

TEST_CASE("padded layout: masked slots are 0 with inf / NaN logits, valid slots match flat") {
  const batch b;
  const auto layout = rlcore::padded(rlcore::make_matrix_view(b.mask.data(), 2, 3));
  check_layout(layout, [](auto* data) { return rlcore::make_matrix_view(data, 2, 3); });
}

TEST_CASE("packed layout: masked slots are 0 with inf / NaN logits, valid slots match flat") {
  const batch b;
  const std::vector<index_t> offsets{0, 3, 6};
  const auto layout = rlcore::packed(offsets, b.mask);
  check_layout(layout, [](auto* data) { return rlcore::make_vector_view(data, 6); });
}

TEST_CASE("packed layout with sequences of different lengths maps slot (i, t) to offsets[i] + t") {
  // Sequences of lengths 1, 0 and 2 over V = 3: the logits rows are the flat token rows.
  const std::vector<index_t> offsets{0, 1, 1, 3};
  const auto layout = rlcore::packed(offsets);
  const std::vector<double> logits{0.0, 1.0, 2.0, 5.0, 5.0, 5.0, 0.0, std::log(3.0), 0.0};
  const std::vector<int> ids{2, 0, 1};
  std::vector<double> lp(3);
  rlcore::token_log_probs(layout, rlcore::make_matrix_view(logits.data(), 3, 3), ids, lp);
  CHECK(lp[0] == doctest::Approx(2.0 - std::log(1.0 + std::exp(1.0) + std::exp(2.0))));
  CHECK(lp[1] == doctest::Approx(-std::log(3.0)));
  CHECK(lp[2] == doctest::Approx(std::log(3.0) - std::log(5.0)));
}

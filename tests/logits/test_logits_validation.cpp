// Validation: one check per rule, each naming the argument with expected and actual values.
#include "../common/check_invalid.hpp"

#include <rlcore/objective/logits.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using rlcore_test::check_invalid;

using rlcore::index_t;

namespace {

struct fixture {
  std::vector<double> logits = std::vector<double>(12, 0.5); // 3 x 4
  std::vector<double> ref = std::vector<double>(12, 0.25);
  std::vector<int> ids{0, 3, 1};
  std::vector<double> lp = std::vector<double>(3);
  std::vector<double> h = std::vector<double>(3);
  std::vector<double> g = std::vector<double>(3, 1.0);
  std::vector<double> grad = std::vector<double>(12);
  [[nodiscard]] rlcore::matrix_view<const double> z() const {
    return rlcore::make_matrix_view(logits.data(), 3, 4).as_const();
  }
  [[nodiscard]] rlcore::matrix_view<const double> q() const {
    return rlcore::make_matrix_view(ref.data(), 3, 4).as_const();
  }
  rlcore::matrix_view<double> gz() { return rlcore::make_matrix_view(grad.data(), 3, 4); }
};

} // namespace

TEST_CASE("token ids outside [0, V) are named with their index and value") {
  fixture f;
  f.ids = {0, 4, 1};
  check_invalid([&] { rlcore::token_log_probs(f.z(), f.ids, f.lp); }, "token_ids",
                "rlcore::token_log_probs: argument 'token_ids': expected token ids in [0, V) = "
                "[0, 4), got token_ids[1] = 4");
  f.ids = {0, 1, -1};
  check_invalid([&] { rlcore::token_log_probs_backward(f.z(), f.ids, f.g, f.gz()); }, "token_ids",
                "got token_ids[2] = -1");
  // The first bad id is reported, whatever the order the rows were processed in.
  f.ids = {9, 1, -1};
  check_invalid([&] { rlcore::token_log_probs(f.z(), f.ids, f.lp, f.h); }, "token_ids",
                "got token_ids[0] = 9");
  // Unsigned ids too (no wrap-around into range).
  const std::vector<std::uint64_t> big_ids{0, 1, std::uint64_t{1} << 40};
  check_invalid([&] { rlcore::token_log_probs(f.z(), big_ids, f.lp); }, "token_ids",
                "got token_ids[2] = 1099511627776");
  // Layout form: (i, t) and the logits row.
  const std::vector<index_t> offsets{0, 1, 3};
  const auto layout = rlcore::packed(offsets);
  f.ids = {0, 1, 7};
  check_invalid([&] { rlcore::token_log_probs(layout, f.z(), f.ids, f.lp); }, "token_ids",
                "got token_ids(1, 1) = 7 (logits row 2)");
}

TEST_CASE("shape mismatches between logits rows and per-token arguments") {
  fixture f;
  const std::vector<int> two_ids{0, 1};
  check_invalid([&] { rlcore::token_log_probs(f.z(), two_ids, f.lp); }, "token_ids",
                "expected 3 entries (one per logits row), got 2");
  std::vector<double> short_lp(2);
  check_invalid([&] { rlcore::token_log_probs(f.z(), f.ids, short_lp); }, "log_probs_out",
                "expected 3 entries (one per logits row), got 2");
  check_invalid([&] { rlcore::token_log_probs(f.z(), f.ids, f.lp, short_lp); }, "entropy_out",
                "expected 3 entries (one per logits row), got 2");
  const std::vector<double> short_g(2);
  check_invalid([&] { rlcore::token_log_probs_backward(f.z(), f.ids, short_g, f.gz()); },
                "grad_log_probs", "expected 3 entries (one per logits row), got 2");
  check_invalid([&] { rlcore::token_log_probs_backward(f.z(), f.ids, f.g, short_g, f.gz()); },
                "grad_entropy", "expected 3 entries (one per logits row), got 2");
  std::vector<double> grad_small(8);
  check_invalid(
      [&] {
        rlcore::token_log_probs_backward(f.z(), f.ids, f.g,
                                         rlcore::make_matrix_view(grad_small.data(), 2, 4));
      },
      "grad_logits_out", "expected shape (3, 4) like logits, got (2, 4)");
  // Layout form: logits must have one row per token slot.
  const auto layout = rlcore::padded_unmasked(2, 2);
  std::vector<int> ids22{0, 1, 2, 3};
  std::vector<double> lp22(4);
  check_invalid(
      [&] {
        rlcore::token_log_probs(layout, f.z(), rlcore::make_matrix_view(ids22.data(), 2, 2),
                                rlcore::make_matrix_view(lp22.data(), 2, 2));
      },
      "logits", "expected 4 rows (one per token slot of the layout), got 3");
  const auto layout13 = rlcore::padded_unmasked(1, 3);
  check_invalid(
      [&] {
        rlcore::token_log_probs(layout13, f.z(), rlcore::make_matrix_view(ids22.data(), 2, 2),
                                rlcore::make_matrix_view(lp22.data(), 1, 3));
      },
      "token_ids", "expected shape (1, 3) to match the mask, got (2, 2)");
}

TEST_CASE("an empty vocabulary is rejected") {
  const std::vector<double> none;
  const std::vector<int> ids{0, 0};
  std::vector<double> lp(2);
  check_invalid(
      [&] { rlcore::token_log_probs(rlcore::make_matrix_view(none.data(), 2, 0), ids, lp); },
      "logits", "expected a vocabulary of at least 1 column, got 0");
  check_invalid(
      [&] {
        rlcore::full_kl_from_logits(rlcore::make_matrix_view(none.data(), 2, 0),
                                    rlcore::make_matrix_view(none.data(), 2, 0), lp);
      },
      "logits", "expected a vocabulary of at least 1 column, got 0");
}

TEST_CASE("temperature must be finite and > 0 with a finite inverse") {
  fixture f;
  for (double tau : {0.0, -1.0, std::numeric_limits<double>::infinity(), std::nan(""), 1e-320}) {
    rlcore::logits_options options;
    options.temperature = tau;
    check_invalid([&] { rlcore::token_log_probs(f.z(), f.ids, f.lp, options); },
                  "options.temperature", "expected a finite temperature > 0");
    check_invalid([&] { rlcore::token_log_probs_backward(f.z(), f.ids, f.g, f.gz(), options); },
                  "options.temperature", "expected a finite temperature > 0");
    check_invalid([&] { rlcore::full_kl_from_logits(f.z(), f.q(), f.lp, options); },
                  "options.temperature", "expected a finite temperature > 0");
  }
  // 1e-39 is a fine double but its inverse overflows float: rejected for float logits.
  const std::vector<float> zf(12, 0.5F);
  std::vector<float> lpf(3);
  rlcore::logits_options options;
  options.temperature = 1e-39;
  check_invalid(
      [&] {
        rlcore::token_log_probs(rlcore::make_matrix_view(zf.data(), 3, 4), f.ids, lpf, options);
      },
      "options.temperature", "got 1e-39");
}

TEST_CASE("non-finite logits in a valid row are an error by default, named") {
  fixture f;
  f.logits[6] = std::numeric_limits<double>::infinity(); // row 1
  f.logits[9] = std::nan("");                            // row 2
  check_invalid([&] { rlcore::token_log_probs(f.z(), f.ids, f.lp); }, "logits",
                "expected finite logits in every valid row (options.nonfinite_logits == error), "
                "got a NaN or inf in logits row 1");
  check_invalid([&] { rlcore::token_log_probs_backward(f.z(), f.ids, f.g, f.gz()); }, "logits",
                "logits row 1");
  check_invalid([&] { rlcore::full_kl_from_logits(f.z(), f.q(), f.lp); }, "logits", "logits row 1");
  fixture r;
  r.ref[3] = -std::numeric_limits<double>::infinity(); // ref row 0
  check_invalid([&] { rlcore::full_kl_from_logits(r.z(), r.q(), r.lp); }, "ref_logits",
                "got a NaN or inf in ref_logits row 0");
  check_invalid([&] { rlcore::full_kl_from_logits_backward(r.z(), r.q(), r.g, r.gz()); },
                "ref_logits", "ref_logits row 0");
  // The propagate policy does not check.
  rlcore::logits_options options;
  options.nonfinite_logits = rlcore::nonfinite_logits_policy::propagate;
  rlcore::token_log_probs(f.z(), f.ids, f.lp, options);
  CHECK(std::isnan(f.lp[1]));
  CHECK(f.lp[0] == doctest::Approx(-std::log(4.0)));
}

TEST_CASE("full KL shape checks name ref_logits, kl_out, grad_kl and grad_logits_out") {
  fixture f;
  const std::vector<double> ref_wide(15);
  check_invalid(
      [&] {
        rlcore::full_kl_from_logits(f.z(), rlcore::make_matrix_view(ref_wide.data(), 3, 5), f.lp);
      },
      "ref_logits", "expected shape (3, 4) like logits, got (3, 5)");
  std::vector<double> kl4(4);
  check_invalid([&] { rlcore::full_kl_from_logits(f.z(), f.q(), kl4); }, "kl_out",
                "expected 3 entries (one per logits row), got 4");
  check_invalid([&] { rlcore::full_kl_from_logits_backward(f.z(), f.q(), kl4, f.gz()); }, "grad_kl",
                "expected 3 entries (one per logits row), got 4");
  std::vector<double> grad_wide(15);
  check_invalid(
      [&] {
        rlcore::full_kl_from_logits_backward(f.z(), f.q(), f.g,
                                             rlcore::make_matrix_view(grad_wide.data(), 3, 5));
      },
      "grad_logits_out", "expected shape (3, 4) like logits, got (3, 5)");
}

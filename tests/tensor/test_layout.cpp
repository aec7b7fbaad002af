// Layouts and groups: binding, shape checks and the validation messages.
#include "../common/check_invalid.hpp"

#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

using rlcore::index_t;

using rlcore_test::check_invalid;

TEST_CASE("padded layout: validity, binding and shape mismatch") {
  std::vector<std::uint8_t> mask{1, 1, 0, 1, 0, 1}; // 2 x 3, interior hole in row 1
  auto m = rlcore::make_matrix_view(mask.data(), 2, 3);
  auto layout = rlcore::padded(m);
  CHECK(layout.rows() == 2);
  CHECK(layout.row_length(1) == 3);
  CHECK(layout.valid(0, 1));
  CHECK_FALSE(layout.valid(0, 2));
  CHECK_FALSE(layout.valid(1, 1));
  CHECK(layout.valid(1, 2));

  std::vector<double> lp(6, 0.5);
  auto lpv = rlcore::make_matrix_view(lp.data(), 2, 3);
  auto bound = layout.bind("f", "log_probs", lpv);
  CHECK(bound(1, 2) == 0.5);

  std::vector<double> wrong(8);
  auto wrongv = rlcore::make_matrix_view(wrong.data(), 2, 4);
  check_invalid([&] { (void)layout.bind("f", "log_probs", wrongv); }, "log_probs",
                "expected shape (2, 3) to match the mask, got (2, 4)");
}

TEST_CASE("padded_unmasked: every token valid; negative shapes rejected") {
  auto layout = rlcore::padded_unmasked(3, 4);
  CHECK(layout.valid(2, 3));
  CHECK(layout.token_slots() == 12);
  check_invalid([] { (void)rlcore::padded_unmasked(-1, 4); }, "rows/cols", "non-negative");
}

TEST_CASE("packed layout: offsets index flat buffers; bad offsets are named") {
  std::vector<index_t> offsets{0, 2, 2, 5};
  auto layout = rlcore::packed(offsets);
  CHECK(layout.rows() == 3);
  CHECK(layout.row_length(0) == 2);
  CHECK(layout.row_length(1) == 0);
  CHECK(layout.row_length(2) == 3);
  CHECK(layout.token_slots() == 5);
  std::vector<float> flat{0, 1, 2, 3, 4};
  auto v = layout.bind("f", "advantages", flat);
  CHECK(v(2, 0) == 2.0f);
  CHECK(v(2, 2) == 4.0f);

  std::vector<float> short_flat(4);
  check_invalid([&] { (void)layout.bind("f", "advantages", short_flat); }, "advantages",
                "expected 5 packed tokens (offsets[N]), got 4");

  std::vector<index_t> not_monotone{0, 3, 2};
  check_invalid([&] { (void)rlcore::packed(not_monotone); }, "offsets",
                "expected non-decreasing offsets, got offsets[1] = 3 > offsets[2] = 2");
  std::vector<index_t> bad_start{1, 3};
  check_invalid([&] { (void)rlcore::packed(bad_start); }, "offsets",
                "expected offsets[0] == 0, got 1");
  std::vector<index_t> empty;
  check_invalid([&] { (void)rlcore::packed(empty); }, "offsets", "at least 1 entry");
  std::vector<std::int32_t> int32_offsets{0, 4};
  CHECK(rlcore::packed(int32_offsets).token_slots() == 4);
}

TEST_CASE("packed layout with a mask: interior observation tokens") {
  std::vector<int> offsets{0, 3};
  std::vector<float> mask{1, 0, 1};
  auto layout = rlcore::packed(offsets, mask);
  CHECK(layout.valid(0, 0));
  CHECK_FALSE(layout.valid(0, 1));
  std::vector<float> short_mask{1, 0};
  check_invalid([&] { (void)rlcore::packed(offsets, short_mask); }, "mask",
                "expected 3 entries (offsets[N]), got 2");
}

TEST_CASE("groups: uniform and offset groups are validated against N") {
  CHECK(rlcore::detail::validate_groups("f", rlcore::uniform_groups{4}, 8) == 2);
  check_invalid([] { (void)rlcore::detail::validate_groups("f", rlcore::uniform_groups{3}, 8); },
                "groups", "group size G = 3 does not divide the number of sequences N = 8");
  check_invalid([] { (void)rlcore::detail::validate_groups("f", rlcore::uniform_groups{0}, 8); },
                "groups", "expected group size G >= 1, got 0");

  std::vector<index_t> offs{0, 3, 3, 5};
  auto groups = rlcore::group_offsets(offs);
  CHECK(rlcore::detail::validate_groups("f", groups, 5) == 3);
  CHECK(groups.begin(2) == 3);
  CHECK(groups.end(2) == 5);
  check_invalid([&] { (void)rlcore::detail::validate_groups("f", groups, 6); }, "groups",
                "expected the last group offset to equal N = 6, got 5");
}

// Fuzz target: layout and group validation (padded, packed offsets and masks, group offsets,
// uniform groups, token binding). Random shapes and offsets (non-monotone, negative, huge, wrong
// start, strided) must either be accepted, when an independent oracle says they are valid, or
// raise rlcore::invalid_argument naming the argument; accepted layouts must report the oracle's
// rows, row lengths and token counts.
#include "fuzz_util.hpp"

#include <rlcore/rlcore.hpp>

#include <cstdint>
#include <vector>

namespace {

using rlcore::index_t;
using rlcore_fuzz::check;
using rlcore_fuzz::succeeds_or_invalid;

// The oracle: offsets are valid when there is at least one, the first is 0 and none decreases.
template <class Offset>
bool offsets_valid(const std::vector<Offset>& offsets) {
  if (offsets.empty() || offsets[0] != 0) {
    return false;
  }
  for (std::size_t k = 1; k < offsets.size(); ++k) {
    if (offsets[k] < offsets[k - 1]) {
      return false;
    }
  }
  return true;
}

template <class Offset>
std::vector<Offset> random_offsets(FuzzedDataProvider& in) {
  const auto count = in.ConsumeIntegralInRange<std::size_t>(0, 9);
  std::vector<Offset> offsets(count);
  Offset running = 0;
  for (auto& o : offsets) {
    // Mostly small non-decreasing steps, sometimes an arbitrary (negative, huge, decreasing) value.
    if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
      o = in.ConsumeIntegral<Offset>();
    } else {
      o = static_cast<Offset>(static_cast<std::uint64_t>(running)
                              + in.ConsumeIntegralInRange<std::uint64_t>(0, 4));
    }
    running = o;
  }
  if (!offsets.empty() && in.ConsumeBool()) {
    offsets[0] = 0;
  }
  return offsets;
}

// Binds a flat buffer of a random size (often the right one) and checks the decision.
template <class Layout>
void bind_flat(FuzzedDataProvider& in, const Layout& layout) {
  const index_t total = layout.token_slots();
  const bool right = in.ConsumeBool() && total <= 4096;
  const auto size =
      right ? static_cast<std::size_t>(total) : in.ConsumeIntegralInRange<std::size_t>(0, 64);
  std::vector<float> flat(size, 1.0f);
  const bool ok = succeeds_or_invalid([&] { (void)layout.bind("fuzz", "flat", flat); });
  check(ok == (static_cast<index_t>(size) == total), "packed bind decision", double(size));
}

template <class Offset>
void fuzz_packed(FuzzedDataProvider& in) {
  const auto offsets = random_offsets<Offset>(in);
  const bool valid = offsets_valid(offsets);
  const bool with_mask = in.ConsumeBool();
  if (!with_mask) {
    const bool ok = succeeds_or_invalid([&] {
      const auto layout = rlcore::packed(offsets);
      check(layout.rows() == static_cast<index_t>(offsets.size()) - 1, "packed rows");
      check(layout.token_slots() == static_cast<index_t>(offsets.back()), "packed total");
      for (index_t i = 0; i < layout.rows(); ++i) {
        check(layout.row_length(i) == static_cast<index_t>(offsets[i + 1] - offsets[i]),
              "packed row length");
        check(layout.valid(i, 0), "unmasked packed token invalid");
      }
      bind_flat(in, layout);
    });
    check(ok == valid, "packed(offsets) decision");
    return;
  }
  const index_t total = valid ? static_cast<index_t>(offsets.back()) : -1;
  const bool right = in.ConsumeBool() && total >= 0 && total <= 4096;
  const auto mask_size =
      right ? static_cast<std::size_t>(total) : in.ConsumeIntegralInRange<std::size_t>(0, 40);
  const auto mask = rlcore_fuzz::mask_values(in, mask_size, true);
  const bool ok = succeeds_or_invalid([&] {
    const auto layout = rlcore::packed(offsets, mask);
    for (index_t i = 0; i < layout.rows(); ++i) {
      for (index_t t = 0; t < layout.row_length(i); ++t) {
        const auto flat = static_cast<std::size_t>(offsets[i]) + static_cast<std::size_t>(t);
        check(layout.valid(i, t) == (mask[flat] != 0), "packed mask validity");
      }
    }
    bind_flat(in, layout);
  });
  check(ok == (valid && static_cast<index_t>(mask_size) == total),
        "packed(offsets, mask) decision");
}

void fuzz_strided_offsets(FuzzedDataProvider& in) {
  std::vector<index_t> storage{0, 0, 1, 1, 2, 2};
  const index_t stride = in.ConsumeIntegralInRange<index_t>(2, 3);
  const rlcore::vector_view<const index_t> strided{storage.data(), 6 / stride, stride};
  const bool ok = succeeds_or_invalid([&] { (void)rlcore::packed(strided); });
  check(!ok, "strided offsets accepted");
}

void fuzz_padded(FuzzedDataProvider& in) {
  const auto rows = in.ConsumeIntegralInRange<index_t>(0, 6);
  const auto cols = in.ConsumeIntegralInRange<index_t>(0, 6);
  const auto mask = rlcore_fuzz::mask_values(in, static_cast<std::size_t>(rows * cols), true);
  const auto layout = rlcore::padded(rlcore::make_matrix_view(mask.data(), rows, cols));
  check(layout.rows() == rows && layout.token_slots() == rows * cols, "padded shape");
  for (index_t i = 0; i < rows; ++i) {
    for (index_t t = 0; t < cols; ++t) {
      check(layout.valid(i, t) == (mask[static_cast<std::size_t>(i * cols + t)] != 0),
            "padded validity");
    }
  }
  const auto r = in.ConsumeBool() ? rows : in.ConsumeIntegralInRange<index_t>(0, 6);
  const auto c = in.ConsumeBool() ? cols : in.ConsumeIntegralInRange<index_t>(0, 6);
  std::vector<double> x(static_cast<std::size_t>(r * c), 0.5);
  const auto view = rlcore::make_matrix_view(x.data(), r, c);
  const bool ok = succeeds_or_invalid([&] { (void)layout.bind("fuzz", "x", view); });
  check(ok == (r == rows && c == cols), "padded bind decision");

  const auto neg_rows = in.ConsumeIntegralInRange<index_t>(-3, 3);
  const auto neg_cols = in.ConsumeIntegralInRange<index_t>(-3, 3);
  const bool unmasked_ok =
      succeeds_or_invalid([&] { (void)rlcore::padded_unmasked(neg_rows, neg_cols); });
  check(unmasked_ok == (neg_rows >= 0 && neg_cols >= 0), "padded_unmasked decision");
}

template <class Offset>
void fuzz_groups(FuzzedDataProvider& in) {
  const auto offsets = random_offsets<Offset>(in);
  const auto n = in.ConsumeBool() && !offsets.empty() && offsets.back() >= 0
                     ? static_cast<index_t>(offsets.back())
                     : in.ConsumeIntegralInRange<index_t>(0, 20);
  const bool ok = succeeds_or_invalid([&] {
    const auto groups = rlcore::group_offsets(offsets);
    const index_t count = rlcore::detail::validate_groups("fuzz", groups, n);
    check(count == static_cast<index_t>(offsets.size()) - 1, "group count");
    index_t covered = 0;
    for (index_t g = 0; g < count; ++g) {
      check(groups.begin(g) == covered && groups.end(g) >= groups.begin(g), "group tiling");
      covered = groups.end(g);
    }
    check(covered == n, "groups cover N");
  });
  check(ok == (offsets_valid(offsets) && static_cast<index_t>(offsets.back()) == n),
        "group offsets decision");

  const rlcore::uniform_groups uniform{in.ConsumeIntegral<index_t>() % 9};
  const index_t m = in.ConsumeIntegralInRange<index_t>(0, 40);
  const bool uniform_ok = succeeds_or_invalid([&] {
    const index_t count = rlcore::detail::validate_groups("fuzz", uniform, m);
    check(count * uniform.size == m, "uniform group count");
  });
  check(uniform_ok == (uniform.size >= 1 && m % uniform.size == 0), "uniform groups decision");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange<int>(0, 6)) {
  case 0:
    fuzz_packed<std::int64_t>(in);
    break;
  case 1:
    fuzz_packed<std::int32_t>(in);
    break;
  case 2:
    fuzz_packed<std::uint32_t>(in);
    break;
  case 3:
    fuzz_padded(in);
    break;
  case 4:
    fuzz_groups<std::int64_t>(in);
    break;
  case 5:
    fuzz_groups<std::int32_t>(in);
    break;
  default:
    fuzz_strided_offsets(in);
    break;
  }
  return 0;
}

// A random batch for the fuzz targets: N sequences in a padded (N x T + mask) or packed (offsets +
// flat mask) layout, a group layout over the sequences, and per-token buffers. `with_layout`
// hands a generic callback the rlcore layout, the group layout and a maker of per-token tensors,
// so each target is written once for both layouts.
#pragma once

#include "fuzz_util.hpp"

#include <rlcore/rlcore.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rlcore_fuzz {

using rlcore::index_t;

struct batch {
  bool packed = false;
  index_t n = 0;
  index_t cols = 0;                  ///< padded T
  std::vector<std::int64_t> offsets; ///< packed: N + 1
  std::vector<std::uint8_t> mask;    ///< token slots
  bool uniform_groups = true;
  index_t group_size = 1;
  std::vector<std::int64_t> group_offsets;

  [[nodiscard]] index_t slots() const { return static_cast<index_t>(mask.size()); }
  [[nodiscard]] index_t length(index_t i) const {
    return packed ? offsets[static_cast<std::size_t>(i + 1)] - offsets[static_cast<std::size_t>(i)]
                  : cols;
  }
  [[nodiscard]] std::size_t slot(index_t i, index_t t) const {
    return static_cast<std::size_t>(packed ? offsets[static_cast<std::size_t>(i)] + t
                                           : i * cols + t);
  }
  [[nodiscard]] bool valid(index_t i, index_t t) const { return mask[slot(i, t)] != 0; }
  [[nodiscard]] index_t valid_count(index_t i) const {
    index_t c = 0;
    for (index_t t = 0; t < length(i); ++t) {
      c += valid(i, t) ? 1 : 0;
    }
    return c;
  }
  [[nodiscard]] index_t num_groups() const {
    return uniform_groups ? n / group_size : static_cast<index_t>(group_offsets.size()) - 1;
  }
  [[nodiscard]] index_t group_begin(index_t g) const {
    return uniform_groups ? g * group_size : group_offsets[static_cast<std::size_t>(g)];
  }
  [[nodiscard]] index_t group_end(index_t g) const {
    return uniform_groups ? (g + 1) * group_size : group_offsets[static_cast<std::size_t>(g + 1)];
  }
};

/// A valid random batch: N in [1, 8], lengths in [0, 6], masks with interior holes and all-masked
/// rows, uniform groups (G divides N, G = 1 and G = N included) or offset groups (empty included).
inline batch random_batch(FuzzedDataProvider& in) {
  batch b;
  b.packed = in.ConsumeBool();
  b.n = in.ConsumeIntegralInRange<index_t>(1, 8);
  if (b.packed) {
    b.offsets = valid_offsets(in, static_cast<std::size_t>(b.n), 6);
    b.mask.resize(static_cast<std::size_t>(b.offsets.back()));
  } else {
    b.cols = in.ConsumeIntegralInRange<index_t>(0, 6);
    b.mask.resize(static_cast<std::size_t>(b.n * b.cols));
  }
  const int density = in.ConsumeIntegralInRange<int>(0, 4); // 0: all masked, 4: all valid
  for (auto& m : b.mask) {
    m = density == 4 || (density > 0 && in.ConsumeIntegralInRange<int>(0, 3) < density) ? 1 : 0;
  }
  b.uniform_groups = in.ConsumeBool();
  if (b.uniform_groups) {
    std::vector<index_t> divisors;
    for (index_t g = 1; g <= b.n; ++g) {
      if (b.n % g == 0) {
        divisors.push_back(g);
      }
    }
    b.group_size = divisors[in.ConsumeIntegralInRange<std::size_t>(0, divisors.size() - 1)];
  } else {
    b.group_offsets.push_back(0);
    while (b.group_offsets.back() < b.n) {
      const auto step = in.ConsumeIntegralInRange<std::int64_t>(0, 4);
      b.group_offsets.push_back(std::min<std::int64_t>(b.group_offsets.back() + step, b.n));
      if (b.group_offsets.size() > 12) {
        b.group_offsets.push_back(b.n);
      }
    }
  }
  return b;
}

/// Per-token tensor maker: a padded N x T matrix view or the packed flat vector itself.
struct token_tensor_maker {
  const batch* b;
  template <class T>
  auto operator()(std::vector<T>& v) const {
    return rlcore::make_matrix_view(v.data(), b->n, b->cols);
  }
};

/// Calls f(layout, groups, make) with the batch's rlcore layout and group layout; make(vector)
/// turns a buffer of b.slots() elements into a per-token tensor for that layout.
template <class F>
void with_layout(const batch& b, F&& f) {
  auto dispatch_groups = [&](const auto& layout, auto make) {
    if (b.uniform_groups) {
      f(layout, rlcore::uniform_groups{b.group_size}, make);
    } else {
      f(layout, rlcore::group_offsets(b.group_offsets), make);
    }
  };
  if (b.packed) {
    dispatch_groups(rlcore::packed(b.offsets, b.mask),
                    [](auto& v) -> decltype(auto) { return (v); });
  } else {
    dispatch_groups(rlcore::padded(rlcore::make_matrix_view(b.mask.data(), b.n, b.cols)),
                    token_tensor_maker{&b});
  }
}

// A token buffer for the batch; with a fault, one slot too many (packed) or one column too many
// (padded), so that binding it must fail.
struct token_buffer {
  std::vector<double> data;
  index_t cols;
};

inline token_buffer make_buffer(const batch& b, bool wrong, double fill = 123.0) {
  if (!wrong) {
    return {std::vector<double>(b.mask.size(), fill), b.cols};
  }
  return {std::vector<double>(
              b.packed ? b.mask.size() + 1 : static_cast<std::size_t>(b.n * (b.cols + 1)), fill),
          b.cols + 1};
}

template <class Layout>
auto token_tensor(const batch& b, const Layout&, token_buffer& buffer) {
  if constexpr (Layout::is_packed) {
    return rlcore::vector_view<double>{buffer.data.data(), static_cast<index_t>(buffer.data.size()),
                                       1};
  } else {
    return rlcore::make_matrix_view(buffer.data.data(), b.n, buffer.cols);
  }
}

// A read-only per-token tensor over a buffer of b.slots() values.
template <class Layout>
auto input_tensor(const batch& b, const Layout&, const std::vector<double>& v) {
  if constexpr (Layout::is_packed) {
    return rlcore::vector_view<const double>{v.data(), static_cast<index_t>(v.size()), 1};
  } else {
    return rlcore::make_matrix_view(v.data(), b.n, b.cols);
  }
}

} // namespace rlcore_fuzz

// The tensor concepts: which types are tensors, and the views they produce.
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <array>
#include <span>
#include <vector>

namespace {

// A user type that satisfies the structural matrix concept (no specialisation).
struct strided_user_matrix {
  std::vector<double> storage;
  rlcore::index_t r = 0, c = 0;
  double* data() { return storage.data(); }
  const double* data() const { return storage.data(); }
  rlcore::index_t rows() const { return r; }
  rlcore::index_t cols() const { return c; }
  rlcore::index_t row_stride() const { return 1; } // column-major
  rlcore::index_t col_stride() const { return r; }
};

// A user type plugged in through the trait.
struct traited_user_tensor {
  float values[6] = {1, 2, 3, 4, 5, 6};
};

struct not_a_tensor {
  int x = 0;
};

} // namespace

template <>
struct rlcore::tensor_traits<traited_user_tensor> {
  using value_type = float;
  using memory_space = rlcore::host_space;
  static rlcore::matrix_view<float> matrix(traited_user_tensor& t) {
    return rlcore::make_matrix_view(t.values, 2, 3);
  }
  static rlcore::matrix_view<const float> matrix(const traited_user_tensor& t) {
    return rlcore::make_matrix_view(t.values, 2, 3);
  }
};

static_assert(rlcore::matrix_like<strided_user_matrix>);
static_assert(rlcore::mutable_matrix_like<strided_user_matrix>);
static_assert(!rlcore::mutable_matrix_like<const strided_user_matrix>);
static_assert(rlcore::matrix_like<traited_user_tensor>);
static_assert(rlcore::vector_like<std::vector<double>>);
static_assert(rlcore::vector_like<std::span<const float>>);
static_assert(rlcore::vector_like<std::array<int, 3>>);
static_assert(!rlcore::mutable_vector_like<const std::vector<double>>);
static_assert(!rlcore::matrix_like<not_a_tensor>);
static_assert(!rlcore::vector_like<not_a_tensor>);
static_assert(!rlcore::vector_like<std::vector<std::vector<double>>>);
static_assert(rlcore::matrix_like<rlcore::matrix_view<double>>);
static_assert(rlcore::vector_like<rlcore::vector_view<const float, rlcore::device_space>>);
static_assert(std::same_as<rlcore::value_type_of<traited_user_tensor>, float>);
static_assert(std::same_as<rlcore::memory_space_of<std::vector<double>>, rlcore::host_space>);
static_assert(
    std::same_as<rlcore::memory_space_of<rlcore::matrix_view<float, rlcore::device_space>>,
                 rlcore::device_space>);

TEST_CASE("structural matrix members give a strided view with the user's strides") {
  strided_user_matrix m{{1, 2, 3, 4, 5, 6}, 2, 3}; // column-major 2 x 3
  auto v = rlcore::as_matrix_view(m);
  CHECK(v.rows == 2);
  CHECK(v.cols == 3);
  CHECK(v(0, 0) == 1);
  CHECK(v(1, 0) == 2);
  CHECK(v(0, 2) == 5);
  CHECK(v(1, 2) == 6);
  v(1, 1) = 42;
  CHECK(m.storage[3] == 42);
}

TEST_CASE("the trait wins and produces a row-major view") {
  traited_user_tensor t;
  auto v = rlcore::as_matrix_view(t);
  CHECK(v(1, 0) == 4.0f);
  CHECK(v(0, 2) == 3.0f);
}

TEST_CASE("contiguous containers are vectors") {
  std::vector<double> x{1.0, 2.0, 3.0};
  auto v = rlcore::as_vector_view(x);
  CHECK(v.size == 3);
  CHECK(v[2] == 3.0);
  const std::vector<double>& cx = x;
  auto cv = rlcore::as_vector_view(cx);
  static_assert(std::is_const_v<decltype(cv)::element_type>);
  CHECK(cv[1] == 2.0);
}

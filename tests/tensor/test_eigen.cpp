// The Eigen adapter: row- and column-major matrices, Maps with strides, blocks and vectors.
#include <rlcore/backend/eigen/eigen.hpp>
#include <rlcore/rlcore.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

using RowMajorXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

static_assert(rlcore::matrix_like<Eigen::MatrixXd>);
static_assert(rlcore::matrix_like<RowMajorXd>);
static_assert(rlcore::matrix_like<Eigen::ArrayXXf>);
static_assert(rlcore::matrix_like<Eigen::Map<Eigen::MatrixXf>>);
static_assert(rlcore::matrix_like<Eigen::Ref<const Eigen::MatrixXd>>);
static_assert(rlcore::vector_like<Eigen::VectorXd>);
static_assert(rlcore::vector_like<Eigen::RowVectorXf>);
static_assert(!rlcore::vector_like<Eigen::MatrixXd>);
static_assert(!rlcore::mutable_matrix_like<const Eigen::MatrixXd>);
// An expression has no storage: not a tensor.
static_assert(!rlcore::matrix_like<decltype(Eigen::MatrixXd() + Eigen::MatrixXd())>);

TEST_CASE_TEMPLATE("Eigen matrices keep their element positions", TestType, Eigen::MatrixXd,
                   RowMajorXd, Eigen::MatrixXf, Eigen::ArrayXXd) {
  TestType m(2, 3);
  m << 1, 2, 3, 4, 5, 6;
  auto v = rlcore::as_matrix_view(m);
  CHECK(v.rows == 2);
  CHECK(v.cols == 3);
  for (int i = 0; i < 2; ++i) {
    for (int t = 0; t < 3; ++t) {
      CHECK(v(i, t) == m(i, t));
    }
  }
}

TEST_CASE("Eigen blocks and strided Maps") {
  Eigen::MatrixXd big(4, 5);
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 5; ++j) {
      big(i, j) = 10 * i + j;
    }
  }
  auto block = big.block(1, 2, 2, 3);
  auto v = rlcore::as_matrix_view(block);
  CHECK(v(0, 0) == 12);
  CHECK(v(1, 2) == 24);

  double raw[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  // 2 x 3 row-major view with an outer stride of 6 (every other row of a 4 x 3 buffer... plus pad)
  Eigen::Map<RowMajorXd, 0, Eigen::OuterStride<>> map(raw, 2, 3, Eigen::OuterStride<>(6));
  auto mv = rlcore::as_matrix_view(map);
  CHECK(mv(1, 0) == 6);
  CHECK(mv(1, 2) == 8);

  Eigen::VectorXd x(3);
  x << 7, 8, 9;
  auto xv = rlcore::as_vector_view(x);
  CHECK(xv.size == 3);
  CHECK(xv[2] == 9);
  auto row = big.row(2); // a strided vector
  auto rv = rlcore::as_vector_view(row);
  CHECK(rv.size == 5);
  CHECK(rv[3] == 23);
}

TEST_CASE("Eigen masks build padded layouts") {
  Eigen::Matrix<float, 2, 2> mask;
  mask << 1, 0, 1, 1;
  auto layout = rlcore::padded(mask);
  CHECK(layout.valid(0, 0));
  CHECK_FALSE(layout.valid(0, 1));
  CHECK(layout.valid(1, 1));
}

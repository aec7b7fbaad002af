// Uses the installed / embedded rlcore: builds a padded layout over an Eigen mask and binds a
// tensor. Exits 0 only when the bound view reads the expected element.
#include <rlcore/backend/eigen/eigen.hpp>
#include <rlcore/rlcore.hpp>

#include <Eigen/Core>

#include <cstdio>

int main() {
  Eigen::MatrixXf mask = Eigen::MatrixXf::Ones(2, 3);
  Eigen::MatrixXf log_probs(2, 3);
  log_probs << 1, 2, 3, 4, 5, 6;
  auto layout = rlcore::padded(mask);
  auto lp = layout.bind("consumer", "log_probs", log_probs);
  std::printf("rlcore %d.%d.%d consumer: lp(1, 2) = %g\n", RLCORE_VERSION_MAJOR,
              RLCORE_VERSION_MINOR, RLCORE_VERSION_PATCH, static_cast<double>(lp(1, 2)));
  return lp(1, 2) == 6.0f ? 0 : 1;
}

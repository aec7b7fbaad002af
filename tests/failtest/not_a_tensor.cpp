// Must not compile: each case feeds a wrong type to rlcore and must be rejected by a concept,
// whose name the compiler prints (the ctest checks the diagnostic names it).
#include <rlcore/rlcore.hpp>

#include <string>
#include <vector>

struct not_a_tensor {
  int x = 0;
};

int main() {
#if defined(RLCORE_FAILTEST_MATRIX)
  not_a_tensor t;
  auto v = rlcore::as_matrix_view(t); // not matrix_like
  (void)v;
#elif defined(RLCORE_FAILTEST_VECTOR_OF_STRINGS)
  std::vector<std::string> names{"a"};
  auto v = rlcore::as_vector_view(names); // elements are not arithmetic
  (void)v;
#elif defined(RLCORE_FAILTEST_OFFSETS)
  std::vector<not_a_tensor> offsets(2);
  auto layout = rlcore::packed(offsets); // not vector_like
  (void)layout;
#else
  return 0; // the baseline compiles: proves the harness, not the rejection
#endif
}

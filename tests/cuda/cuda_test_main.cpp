// Test main of the CUDA suites: without a CUDA device it prints a visible skip and returns 77,
// which ctest reports as "Skipped" (SKIP_RETURN_CODE), so CI compiles these tests but never runs
// them.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cuda_runtime.h>

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}

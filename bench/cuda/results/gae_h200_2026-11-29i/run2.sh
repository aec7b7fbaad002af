#!/usr/bin/env bash
# gpugae8 run 2: tests, bench (default + min-blocks-3 variant), sanitizers; everything to $OUT.
B=.carry/gae8/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $OUT/device.txt
for t in test_cuda_gae_chained test_cuda_gae_chained_b3 test_cuda_fused test_cuda_advantage; do
  echo "== $t"; timeout 120 $B/$t > $OUT/$t.log 2>&1; echo "rc $?"; tail -n 3 $OUT/$t.log
done
grep -B2 -A12 "ERROR\|FAILED" $OUT/test_cuda_gae_chained.log $OUT/test_cuda_fused.log | head -40
echo "== bench"; timeout 120 $B/bench_cuda --only gae > $OUT/bench_gae.log 2>&1; echo "rc $?"
grep -E "shape|padded|packed|256 x 8192|cluster 1\)$" $OUT/bench_gae.log | cut -c1-150 | head -40
echo "== bench b3"; timeout 120 $B/bench_cuda_b3 --only gae > $OUT/bench_gae_b3.log 2>&1; echo "rc $?"
grep -E "shape (192|384|256)|padded|packed|access 2" $OUT/bench_gae_b3.log | cut -c1-150 | head -20
for tool in memcheck racecheck initcheck; do
  for t in test_cuda_gae_chained test_cuda_gae_chained_b3 test_cuda_fused; do
    timeout 45 compute-sanitizer --tool $tool --report-api-errors no --error-exitcode 9 $B/$t > $OUT/${tool}_$t.log 2>&1
    echo "$tool $t: rc $? $(grep 'ERROR SUMMARY\|RACECHECK SUMMARY' $OUT/${tool}_$t.log | tail -n 1)"
  done
done

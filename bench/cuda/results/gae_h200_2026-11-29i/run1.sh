#!/usr/bin/env bash
# gpugae8 run: tests, bench (default + min-blocks-3 variant), memcheck; everything to $OUT.
B=.carry/gae8/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $OUT/device.txt
for t in test_cuda_gae_chained test_cuda_fused test_cuda_advantage; do
  echo "== $t"; timeout 120 $B/$t > $OUT/$t.log 2>&1; echo "rc $?"; tail -n 4 $OUT/$t.log
done
grep -B2 -A12 "ERROR\|FAILED\|CHECK(" $OUT/test_cuda_gae_chained.log | head -60
echo "== bench"; timeout 120 $B/bench_cuda --only gae > $OUT/bench_gae.log 2>&1; echo "rc $?"
grep -E "shape|padded|packed|256 x 8192|one block per row \(cluster 1\)$" $OUT/bench_gae.log | head -40
if [ -x $B/bench_cuda_b3 ]; then
  echo "== bench b3"; timeout 90 $B/bench_cuda_b3 --only gae > $OUT/bench_gae_b3.log 2>&1; echo "rc $?"
  grep -E "shape (192|384)|padded|packed|access 2" $OUT/bench_gae_b3.log | head -20
fi
echo "== memcheck"; timeout 170 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 $B/test_cuda_gae_chained > $OUT/memcheck_gae_chained.log 2>&1; echo "rc $?"; tail -n 4 $OUT/memcheck_gae_chained.log

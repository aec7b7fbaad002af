#!/usr/bin/env bash
# run 2 of helper gpugae7: the tile kernel's variants vs the default in the same call (twice),
# GAE tests, sanitizers on the tile kernel's test
B=.carry/gae7/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $OUT/device.txt
for call in 1 2; do
  echo "== bench call $call"
  timeout 90 $B/bench_cuda --only gae 2>&1 | tee $OUT/bench_gae_call$call.log | grep -v "^  (an empty\|one thread per\|generic"
done
echo "== tests"
for t in gae_tiles gae_chained advantage fused; do
  timeout 60 $B/test_cuda_$t > $OUT/test_$t.log 2>&1; echo "test_cuda_$t exit $?; $(grep -E 'test cases|assertions' $OUT/test_$t.log | tail -2 | tr '\n' ' ')"
done
grep -B2 -A12 "ERROR\|FAILED" $OUT/test_gae_tiles.log | head -60
echo "== sanitizers"
S="compute-sanitizer --report-api-errors no --error-exitcode 9"
run() { local name=$1; shift; echo "== $name" >> $OUT/sanitizer.log; timeout "$@" >> $OUT/sanitizer.log 2>&1; echo "$name exit $?; $(grep 'ERROR SUMMARY\|RACECHECK SUMMARY' $OUT/sanitizer.log | tail -n 1)"; }
run "memcheck gae_tiles" 90 $S --tool memcheck $B/test_cuda_gae_tiles
run "initcheck gae_tiles" 90 $S --tool initcheck $B/test_cuda_gae_tiles
run "racecheck gae_tiles" 120 $S --tool racecheck $B/test_cuda_gae_tiles

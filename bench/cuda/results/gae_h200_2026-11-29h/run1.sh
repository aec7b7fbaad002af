#!/usr/bin/env bash
# run 1 of helper gpugae7: GAE bench (tile kernel vs default in the same call), GAE tests, sanitizers
B=.carry/gae7/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $OUT/device.txt
echo "== bench"
timeout 90 $B/bench_cuda --only gae 2>&1 | tee $OUT/bench_gae.log
echo "== tests"
for t in gae_tiles gae_chained advantage fused; do
  timeout 60 $B/test_cuda_$t > $OUT/test_$t.log 2>&1; echo "test_cuda_$t exit $?; $(grep -E 'test cases|assertions' $OUT/test_$t.log | tail -2 | tr '\n' ' ')"
done
grep -B2 -A12 "ERROR\|FAILED" $OUT/test_gae_tiles.log | head -60
echo "== sanitizers"
S="compute-sanitizer --report-api-errors no --error-exitcode 9"
run() { local name=$1; shift; echo "== $name" >> $OUT/sanitizer.log; timeout "$@" >> $OUT/sanitizer.log 2>&1; echo "$name exit $?; $(grep 'ERROR SUMMARY\|RACECHECK SUMMARY' $OUT/sanitizer.log | tail -n 1)"; }
run "memcheck gae_tiles" 60 $S --tool memcheck $B/test_cuda_gae_tiles
run "racecheck gae_tiles (no-mask, packed/odd cases)" 40 $S --tool racecheck $B/test_cuda_gae_tiles '-tc=*without a mask*,*does not take*'
run "initcheck gae_tiles (storage reuse, no-mask cases)" 40 $S --tool initcheck $B/test_cuda_gae_tiles '-tc=*storage reused*,*without a mask*'
run "memcheck gae_chained" 40 $S --tool memcheck $B/test_cuda_gae_chained

# The one device call of gpulogits5 (binaries built on the CPU machine from the working tree with
# runtime_head_measured.patch applied to 5f86ba0; bitwise_old / bitwise_new: bitwise_check.cu
# before the nonfinite-policy fix, against 5f86ba0's and the patched headers).
B=.carry/logits5/bin; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/device.txt 2>&1
timeout 40 $B/bitwise_old > $OUT/bitwise_old.txt 2>&1; timeout 40 $B/bitwise_new > $OUT/bitwise_new.txt 2>&1
for t in test_cuda_logits test_cuda_fused; do timeout 90 $B/$t > $OUT/$t.log 2>&1; echo "$t rc=$?"; tail -4 $OUT/$t.log; done
timeout 150 $B/bench_cuda --only logits > $OUT/bench_logits.log 2>&1; echo "bench rc=$?"
for tool in memcheck racecheck initcheck; do timeout 45 compute-sanitizer --tool $tool --report-api-errors no $B/test_cuda_logits -tc='*any offset*' > $OUT/sanitizer_$tool.log 2>&1; echo "$tool rc=$?"; tail -3 $OUT/sanitizer_$tool.log; done

// Logits benchmarks of bench_cuda (section "logits"): token log-probs + entropy from bf16 logits
// and the fused GRPO loss from logits, 16 x 1024 x 152064 (4.98 GB). Included by bench_cuda.cu
// after its helpers (time_ms, record, fill_*); a separate file so that the logits kernels and the
// token-objective / GAE kernels can be tuned independently.
#pragma once

namespace {

void bench_logits(rlcore::device_context& ctx, bool quick) {
  const index_t rows = quick ? 2048 : 16 * 1024;
  const index_t vocab = 152064;
  const index_t elements = rows * vocab;
  __nv_bfloat16* logits = nullptr;
  __nv_bfloat16* grad = nullptr;
  CHECK_CUDA(cudaMalloc(&logits, std::size_t(elements) * 2));
  CHECK_CUDA(cudaMalloc(&grad, std::size_t(elements) * 2));
  ctx.for_each(elements, fill_bf16{logits, 7u});
  thrust::device_vector<int> ids(rows);
  ctx.for_each(rows, fill_ids{thrust::raw_pointer_cast(ids.data()), vocab});
  thrust::device_vector<float> lp(rows), h(rows);
  const rlcore::matrix_view<const __nv_bfloat16, device_space> view{logits, rows, vocab, vocab, 1};
  std::size_t temp_bytes = 0;
  rlcore::cuda::token_log_probs<__nv_bfloat16, int>(nullptr, temp_bytes, view, nullptr, nullptr,
                                                    nullptr, nullptr, 1.0, ctx.stream);
  auto temp = ctx.allocate<unsigned char>(static_cast<index_t>(temp_bytes));
  const double read_bytes = 2.0 * double(elements);
  const double ms_fwd = time_ms(
      [&](int) {
        rlcore::cuda::token_log_probs<__nv_bfloat16, int>(
            temp.data(), temp_bytes, view, thrust::raw_pointer_cast(ids.data()), nullptr,
            thrust::raw_pointer_cast(lp.data()), thrust::raw_pointer_cast(h.data()), 1.0,
            ctx.stream);
      },
      quick ? 3 : 10);
  record("log-probs + entropy from bf16 logits 16x1024x152064 (fwd)", ms_fwd, read_bytes,
         "floor = one read of the logits");

  // Fused GRPO from logits: per-token old / ref / advantages and a 16 x 1024 padded layout.
  const index_t n = rows / 1024;
  thrust::device_vector<float> old(rows), ref(rows), adv(rows);
  ctx.for_each(rows, fill_uniform{thrust::raw_pointer_cast(old.data()), -13, -11, 3u});
  ctx.for_each(rows, fill_uniform{thrust::raw_pointer_cast(ref.data()), -13, -11, 4u});
  ctx.for_each(rows, fill_uniform{thrust::raw_pointer_cast(adv.data()), -1, 1, 5u});
  thrust::device_vector<std::uint8_t> mask(rows);
  ctx.for_each(rows, fill_mask{thrust::raw_pointer_cast(mask.data()), 1024});
  const auto layout = rlcore::cuda::padded(
      rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(mask.data()), n, 1024));
  auto m = [&](auto& x) {
    return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(x.data()), n, 1024);
  };
  const rlcore::matrix_view<__nv_bfloat16, device_space> grad_view{grad, rows, vocab, vocab, 1};
  // On the H200 this first timing of the call measured 1-3% slower than the same call timed later
  // in the run, with 1, 5 or 100 warm-up calls alike (docs/benchmarks.md; not explained).
  const double ms_fused = time_ms(
      [&](int) {
        (void)rlcore::cuda::grpo_loss_from_logits(layout, view, m(ids), m(old), m(ref), m(adv),
                                                  grad_view, {}, {}, ctx);
      },
      quick ? 2 : 5, 1);
  record("fused GRPO from bf16 logits 16x1024x152064 (fwd+bwd)", ms_fused, 2.0 * read_bytes,
         "floor = one read + one write of the logits");
  // The two-phase form: calls enqueued back to back on one temporary storage with no wait per
  // call (a training step that reads the loss once); the last call's loss is read after the batch.
  const auto grpo_policy = rlcore::grpo_options{}.as_policy_options();
  std::size_t fused_temp_bytes = 0;
  rlcore::cuda::policy_loss_from_logits(nullptr, fused_temp_bytes, layout, view, m(ids), m(old),
                                        m(adv), m(ref), grad_view, grpo_policy, {}, ctx);
  auto fused_temp = ctx.allocate<unsigned char>(static_cast<index_t>(fused_temp_bytes));
  const double ms_two_phase = time_ms(
      [&](int) {
        rlcore::cuda::policy_loss_from_logits(fused_temp.data(), fused_temp_bytes, layout, view,
                                              m(ids), m(old), m(adv), m(ref), grad_view,
                                              grpo_policy, {}, ctx);
      },
      quick ? 2 : 5, 1);
  const double two_phase_loss = rlcore::cuda::finish_policy_loss_from_logits(
                                    fused_temp.data(), layout, m(ids), vocab, grpo_policy, {}, ctx)
                                    .loss;
  record("  same, two-phase form, calls enqueued back to back (no wait per call)", ms_two_phase,
         2.0 * read_bytes, "loss " + std::to_string(two_phase_loss));
  // The cluster kernel's residency: 3 CTAs of the default 4-CTA plan share an SM when the
  // shared-memory carveout is the largest (228 KB); a carveout hint of 70% leaves room for 2.
  using layout_type = std::remove_cv_t<decltype(layout)>;
  using id_view = const decltype(layout.bind(
      "bench", "token_ids", std::declval<const rlcore::matrix_view<int, device_space>&>()));
  using float_view = const decltype(layout.bind(
      "bench", "old_log_probs", std::declval<const rlcore::matrix_view<float, device_space>&>()));
  auto* cluster_kernel = rlcore::cuda::detail::fused_logits_cluster_kernel<
      true, false, __nv_bfloat16, id_view, layout_type,
      rlcore::cuda::detail::make_policy_token_pass<layout_type, float_view, float_view, float_view>,
      rlcore::detail::policy_token_sums>;
  const auto resident_clusters = [&] {
    const auto plan =
        rlcore::cuda::detail::plan_cluster<__nv_bfloat16>(cluster_kernel, view, grad_view, 0);
    cudaLaunchAttribute attributes[2]{};
    const auto config = rlcore::cuda::detail::launch_config(
        rlcore::cuda::detail::cluster_kernel_launch(plan, 1, nullptr), attributes);
    int clusters = 0;
    CHECK_CUDA(cudaOccupancyMaxActiveClusters(&clusters, cluster_kernel, &config));
    return std::to_string(clusters) + " resident clusters of " + std::to_string(plan.size);
  };
  const std::string residency = resident_clusters();
  std::printf("  fused cluster kernel: %s\n", residency.c_str());
  CHECK_CUDA(
      cudaFuncSetAttribute(cluster_kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 70));
  const std::string residency_70 = resident_clusters();
  const double ms_two_per_sm = time_ms(
      [&](int) {
        (void)rlcore::cuda::grpo_loss_from_logits(layout, view, m(ids), m(old), m(ref), m(adv),
                                                  grad_view, {}, {}, ctx);
      },
      quick ? 2 : 5, 1);
  record("  same, shared-memory carveout hint 70% (2 CTAs per SM)", ms_two_per_sm, 2.0 * read_bytes,
         residency_70);
  CHECK_CUDA(
      cudaFuncSetAttribute(cluster_kernel, cudaFuncAttributePreferredSharedMemoryCarveout, -1));
  // The kernel choices of the fused path: cluster sizes (one row per cluster, held in shared
  // memory, one HBM read) and the two-pass kernel (-1: statistics, then the gradient from L2).
  for (const int cluster : {8, 6, 5, 4, 3, 2, -1}) {
    const double ms = time_ms(
        [&](int) {
          (void)rlcore::cuda::detail::fused_policy_loss_from_logits(
              layout, view, m(ids), m(old), m(adv), m(ref), grad_view,
              rlcore::grpo_options{}.as_policy_options(), {}, ctx, nullptr, cluster);
        },
        quick ? 2 : 5, 1);
    const std::string name =
        cluster > 0 ? "  same, cluster of " + std::to_string(cluster) + " CTAs per row forced"
                    : std::string("  same, two-pass kernel forced");
    record(name.c_str(), ms, 2.0 * read_bytes);
  }
  // In place: a call overwrites its input with d logits, and the kernel's speed depends on the
  // data (below), so every timed call reads freshly filled random logits: the time of fill + call
  // minus the time of the fill alone, both measured here.
  const auto refill = [&] { ctx.for_each(elements, fill_bf16{logits, 7u}); };
  const rlcore::matrix_view<__nv_bfloat16, device_space> in_place{logits, rows, vocab, vocab, 1};
  const auto fused_in_place = [&] {
    (void)rlcore::cuda::grpo_loss_from_logits(layout, view, m(ids), m(old), m(ref), m(adv),
                                              in_place, {}, {}, ctx);
  };
  const double ms_fill = time_ms([&](int) { refill(); }, quick ? 2 : 5, 1);
  const double ms_fill_in_place = time_ms(
      [&](int) {
        refill();
        fused_in_place();
      },
      quick ? 2 : 5, 1);
  record("  same, d logits written in place over the logits", ms_fill_in_place - ms_fill,
         2.0 * read_bytes,
         "fill + call " + std::to_string(ms_fill_in_place) + " ms minus fill "
             + std::to_string(ms_fill) + " ms");
  // The same out-of-place call on the logits an in-place call left: d logits, near-uniform values.
  fused_in_place();
  record("  same, out of place, on logits overwritten by their d logits (data dependence)",
         time_ms(
             [&](int) {
               (void)rlcore::cuda::grpo_loss_from_logits(layout, view, m(ids), m(old), m(ref),
                                                         m(adv), grad_view, {}, {}, ctx);
             },
             quick ? 2 : 5, 1),
         2.0 * read_bytes);
  refill();
  // Other vocabulary sizes over the same buffers (rows of V contiguous logits): 32,001 bf16 logits
  // (64,002 bytes) leave the rows not 16-byte aligned (the cluster kernel reads each row's head
  // before the first 16-byte boundary from global memory; the forward, per-element loads there);
  // 32,000, 129,920 and 151,936 are aligned. For 32,001 the two-pass kernel is timed too.
  for (const index_t v : {index_t{32000}, index_t{32001}, index_t{129920}, index_t{151936}}) {
    ctx.for_each(rows, fill_ids{thrust::raw_pointer_cast(ids.data()), v});
    const rlcore::matrix_view<const __nv_bfloat16, device_space> in{logits, rows, v, v, 1};
    const rlcore::matrix_view<__nv_bfloat16, device_space> out{grad, rows, v, v, 1};
    const double bytes = 2.0 * double(rows * v);
    const std::string shape = "16x1024x" + std::to_string(v);
    record("  log-probs + entropy, bf16 " + shape + " (fwd)",
           time_ms(
               [&](int) {
                 rlcore::cuda::token_log_probs<__nv_bfloat16, int>(
                     temp.data(), temp_bytes, in, thrust::raw_pointer_cast(ids.data()), nullptr,
                     thrust::raw_pointer_cast(lp.data()), thrust::raw_pointer_cast(h.data()), 1.0,
                     ctx.stream);
               },
               quick ? 3 : 10),
           bytes, "floor = one read");
    record("  fused GRPO, bf16 " + shape + " (fwd+bwd)",
           time_ms(
               [&](int) {
                 (void)rlcore::cuda::grpo_loss_from_logits(layout, in, m(ids), m(old), m(ref),
                                                           m(adv), out, {}, {}, ctx);
               },
               quick ? 2 : 5, 1),
           2.0 * bytes, "floor = one read + one write");
    if (v == 32001) {
      record("  same, two-pass kernel forced",
             time_ms(
                 [&](int) {
                   (void)rlcore::cuda::detail::fused_policy_loss_from_logits(
                       layout, in, m(ids), m(old), m(adv), m(ref), out,
                       rlcore::grpo_options{}.as_policy_options(), {}, ctx, nullptr, -1);
                 },
                 quick ? 2 : 5, 1),
             2.0 * bytes, "floor = one read + one write");
    }
  }
  CHECK_CUDA(cudaFree(logits));
  CHECK_CUDA(cudaFree(grad));
}

} // namespace

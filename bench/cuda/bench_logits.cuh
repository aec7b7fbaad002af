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
  const double ms_fused = time_ms(
      [&](int) {
        (void)rlcore::cuda::grpo_loss_from_logits(layout, view, m(ids), m(old), m(ref), m(adv),
                                                  grad_view, {}, {}, ctx);
      },
      quick ? 2 : 5, 1);
  record("fused GRPO from bf16 logits 16x1024x152064 (fwd+bwd)", ms_fused, 2.0 * read_bytes,
         "floor = one read + one write of the logits");
  const rlcore::matrix_view<__nv_bfloat16, device_space> in_place{logits, rows, vocab, vocab, 1};
  const double ms_in_place = time_ms(
      [&](int) {
        (void)rlcore::cuda::grpo_loss_from_logits(layout, view, m(ids), m(old), m(ref), m(adv),
                                                  in_place, {}, {}, ctx);
      },
      quick ? 2 : 5, 1);
  record("  same, d logits written in place over the logits", ms_in_place, 2.0 * read_bytes);
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
  CHECK_CUDA(cudaFree(logits));
  CHECK_CUDA(cudaFree(grad));
}

} // namespace

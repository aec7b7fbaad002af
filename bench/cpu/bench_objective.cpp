// CPU throughput of the fused GRPO loss (forward + gradient, one call of rlcore::grpo_objective)
// and of GAE vs GRPO outcome advantages, in tokens/s, for 1e4 .. 1e7 float tokens (rows of
// T = 1000, ~10% of the slots masked), against a memory-bandwidth floor measured here: memcpy of
// as many bytes as the algorithm moves (read + write) / 2, i.e. the same traffic. Each benchmark
// reports `vs_floor` = its time per call / the floor's time (1.0 = at the bandwidth floor).
//
// The fused loss runs with host_context{.threads = n} for n = 1, 2, 4, 8, 16 and 0 (= one per
// hardware thread; second argument); its floor is the copy with the same number of threads (the
// bytes split into contiguous slices, one thread each, started per copy as the loss starts its
// threads per call; 0 = std::thread::hardware_concurrency()), best of 10, measured right before.
// `threads` reports the threads the loss could use (the requested count, capped by its number of
// row blocks), `isa` the instruction set the host kernels ran with (0 baseline, 1 AVX2,
// 2 AVX-512); BM_fused_grpo_loss_baseline_isa caps it at the baseline to show what the runtime
// dispatch brings; BM_fused_grpo_loss_fma runs the opt-in FMA-contracted kernels
// (host_context::contract_fma: rounding-level differences instead of the same bits on every
// instruction set). The 1e6 / 1e7 rows with every thread count, a minute at most:
//   bench_cpu_objective --benchmark_filter='BM_fused_grpo_loss/(1000000|10000000)/'
// (and 'BM_fused_grpo_loss(_fma)?/(1000000|10000000)/' for both kernels)
// (the batches are built once per size).
//
//   fused GRPO loss   reads lp, old, ref, A (4 x 4 B) + mask (1 B), writes d loss / d lp (4 B)
//                     (+ rollout log-probs, 4 B, with the importance correction)
//   GAE               reads rewards, values (2 x 4 B) + mask, writes advantages, returns (2 x 4 B)
//                     (+ an 8 B/token internal next-value buffer written and read)
//   GRPO advantages   reads N scores + mask, writes advantages (4 B)
#include <rlcore/advantage/gae.hpp>
#include <rlcore/advantage/group.hpp>
#include <rlcore/objective/grpo.hpp>
#include <rlcore/rlcore.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr rlcore::index_t cols = 1000;

struct batch {
  rlcore::index_t rows;
  std::vector<std::uint8_t> mask;
  std::vector<float> lp, old, ref, adv, grad, rewards, values, returns, scores;
  std::vector<float> rollout; ///< old + U(-0.15, 0.15): IS weights 0.86 .. 1.16 per token

  explicit batch(rlcore::index_t tokens) : rows(tokens / cols) {
    const auto n = static_cast<std::size_t>(rows * cols);
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> u(0, 1);
    mask.resize(n);
    lp.resize(n);
    old.resize(n);
    ref.resize(n);
    adv.resize(n);
    grad.resize(n);
    rewards.resize(n);
    values.resize(n);
    returns.resize(n);
    scores.resize(static_cast<std::size_t>(rows));
    for (std::size_t k = 0; k < n; ++k) {
      mask[k] = u(rng) < 0.9f ? 1 : 0;
      lp[k] = -3 * u(rng);
      old[k] = lp[k] + 0.4f * (u(rng) - 0.5f);
      ref[k] = lp[k] + 0.6f * (u(rng) - 0.5f);
      adv[k] = 2 * u(rng) - 1;
      rewards[k] = u(rng) < 0.01f ? 1.0f : 0.0f;
      values[k] = u(rng);
    }
    for (float& s : scores) {
      s = u(rng);
    }
    // from a generator of its own: the other inputs stay those of the earlier runs
    std::mt19937 rollout_rng(7);
    rollout.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
      rollout[k] = old[k] + 0.3f * (u(rollout_rng) - 0.5f);
    }
  }
  template <class T>
  rlcore::matrix_view<T> view(std::vector<T>& x) {
    return rlcore::make_matrix_view(x.data(), rows, cols);
  }
};

// The batch of `tokens` tokens, built once per size and kept (~37 B per token).
batch& cached_batch(rlcore::index_t tokens) {
  static std::map<rlcore::index_t, std::unique_ptr<batch>> cache;
  std::unique_ptr<batch>& b = cache[tokens];
  if (!b) {
    b = std::make_unique<batch>(tokens);
  }
  return *b;
}

// The thread count a host_context{.threads = threads} stands for (0 = one per hardware thread).
int resolved_threads(int threads) {
  return threads == 0 ? std::max(1, static_cast<int>(std::thread::hardware_concurrency()))
                      : threads;
}

// Copies src to dst with `threads` threads (contiguous slices; the calling thread copies one).
void parallel_copy(const std::vector<char>& src, std::vector<char>& dst, int threads) {
  const std::size_t bytes = src.size();
  const auto slice = [&](int k) {
    const std::size_t begin = bytes * std::size_t(k) / std::size_t(threads);
    const std::size_t end = bytes * std::size_t(k + 1) / std::size_t(threads);
    std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < threads; ++k) {
    pool.emplace_back(slice, k);
  }
  slice(0);
  for (std::thread& t : pool) {
    t.join();
  }
}

// Best-of-10 time of a copy of `bytes` bytes with `threads` threads (the bandwidth floor of a
// pass moving 2 * bytes).
// Also the best CPU time of the calling thread (the whole copy when threads == 1).
struct floor_times {
  double wall = 1e30;
  double thread_cpu = 1e30;
};

// CPU time consumed by the calling thread, in seconds (not advanced while it waits for a core).
double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

floor_times floor_seconds(std::size_t bytes, int threads) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  floor_times best;
  for (int r = 0; r < 10; ++r) {
    const double c0 = thread_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    parallel_copy(src, dst, threads);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
    const auto t1 = std::chrono::steady_clock::now();
    best.thread_cpu = std::min(best.thread_cpu, thread_cpu_seconds() - c0);
    best.wall = std::min(best.wall, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

// Runs `call` in the benchmark loop, timing each iteration, and reports tokens/s and vs_floor
// (against the copy with `threads` threads). With one thread also cpu_vs_floor: the best
// thread-CPU time of a call over the copy's best (on a shared machine, where the wall time
// includes waits for a core, the steadier comparison of the work itself).
template <class Call>
void run(benchmark::State& state, rlcore::index_t tokens, std::size_t bytes_moved, Call&& call,
         int threads = 1) {
  const floor_times floor_time = floor_seconds(bytes_moved / 2, threads);
  const double floor = floor_time.wall;
  double total = 0;
  double best_cpu = 1e30;
  for (auto _ : state) {
    const double c0 = thread_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    call();
    benchmark::ClobberMemory();
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best_cpu = std::min(best_cpu, thread_cpu_seconds() - c0);
  }
  if (threads == 1) {
    state.counters["cpu_ns_per_token"] = best_cpu / double(tokens) * 1e9;
    state.counters["cpu_floor_ns_per_token"] = floor_time.thread_cpu / double(tokens) * 1e9;
    state.counters["cpu_vs_floor"] = best_cpu / floor_time.thread_cpu;
  }
  const double per_call = total / double(state.iterations());
  state.SetItemsProcessed(state.iterations() * tokens);
  state.counters["vs_floor"] = per_call / floor;
  state.counters["GB/s"] = double(bytes_moved) / per_call / 1e9;
  state.counters["ns_per_token"] = per_call / double(tokens) * 1e9;
  state.counters["floor_ns_per_token"] = floor / double(tokens) * 1e9;
  state.counters["threads"] = threads;
}

// The fused GRPO loss with `threads` threads (state.range(1)) and instruction sets up to `isa`;
// with the FMA-contracted kernels when `fma` (host_context::contract_fma).
void fused_grpo_loss(benchmark::State& state, rlcore::host_isa isa, bool fma = false) {
  const auto tokens = static_cast<rlcore::index_t>(state.range(0));
  rlcore::host_context ctx;
  ctx.threads = static_cast<int>(state.range(1));
  ctx.max_isa = isa;
  ctx.contract_fma = fma;
  batch& b = cached_batch(tokens);
  auto layout = rlcore::padded(b.view(b.mask));
  // the loss splits its rows into blocks of at least host_context::chunked_block_slots token
  // slots (the last block: what remains), one thread per block at most
  int blocks = 0;
  for (rlcore::index_t i = 0, slots = 0; i < b.rows; ++i) {
    slots += cols;
    if (slots >= rlcore::host_context::chunked_block_slots || i + 1 == b.rows) {
      ++blocks;
      slots = 0;
    }
  }
  const std::size_t bytes = static_cast<std::size_t>(tokens) * (4 * 4 + 1 + 4);
  run(
      state, tokens, bytes,
      [&] {
        const auto r = rlcore::grpo_objective(layout, b.view(b.lp), b.view(b.old), b.view(b.ref),
                                              b.view(b.adv), b.view(b.grad), {}, ctx);
        benchmark::DoNotOptimize(r.loss);
      },
      resolved_threads(ctx.threads));
  state.counters["threads"] = std::min(resolved_threads(ctx.threads), blocks);
  state.counters["isa"] =
      std::min(static_cast<double>(isa), static_cast<double>(rlcore::supported_host_isa()));
}

void BM_fused_grpo_loss(benchmark::State& state) {
  fused_grpo_loss(state, rlcore::host_isa::avx512);
}

void BM_fused_grpo_loss_fma(benchmark::State& state) {
  fused_grpo_loss(state, rlcore::host_isa::avx512, true);
}

void BM_fused_grpo_loss_baseline_isa(benchmark::State& state) {
  fused_grpo_loss(state, rlcore::host_isa::baseline);
}

// The fused loss of another policy form, 0.04 * k3, seq-mean-token-mean, one thread: CISPO,
// REINFORCE and SAPO take the chunked path as the clipped surrogate does; GSPO (sequence and
// token level) and GMPO after the row pre-pass (mean log-ratios, advantages, kept weights); with
// `importance` != none the rollout importance correction (truncate at 2) reads rollout log-probs
// too (+4 B/token).
void fused_policy_loss(benchmark::State& state, rlcore::policy_loss form,
                       rlcore::importance_level importance = rlcore::importance_level::none,
                       rlcore::gspo_level gspo = rlcore::gspo_level::sequence) {
  const auto tokens = static_cast<rlcore::index_t>(state.range(0));
  const rlcore::host_context ctx;
  batch& b = cached_batch(tokens);
  auto layout = rlcore::padded(b.view(b.mask));
  rlcore::policy_options options;
  options.loss = form;
  options.gspo = gspo;
  options.kl_beta = 0.04;
  options.aggregation.mode = rlcore::aggregation::seq_mean_token_mean;
  options.importance.level = importance;
  const bool corrected = importance != rlcore::importance_level::none;
  const std::size_t bytes =
      static_cast<std::size_t>(tokens) * (4 * 4 + 1 + 4 + (corrected ? 4 : 0));
  const auto lp = b.view(b.lp), old = b.view(b.old), adv = b.view(b.adv), ref = b.view(b.ref),
             rollout = b.view(b.rollout);
  if (corrected) {
    const rlcore::policy_inputs<decltype(lp), decltype(old), decltype(adv), decltype(ref),
                                rlcore::no_tensor, decltype(rollout)>
        inputs{lp, old, adv, ref, rlcore::none, rollout};
    run(state, tokens, bytes, [&] {
      const auto r =
          rlcore::policy_objective(layout, inputs, b.view(b.grad), rlcore::none, options, ctx);
      benchmark::DoNotOptimize(r.loss);
    });
    return;
  }
  const rlcore::policy_inputs<decltype(lp), decltype(old), decltype(adv), decltype(ref)> inputs{
      lp, old, adv, ref};
  run(state, tokens, bytes, [&] {
    const auto r =
        rlcore::policy_objective(layout, inputs, b.view(b.grad), rlcore::none, options, ctx);
    benchmark::DoNotOptimize(r.loss);
  });
}

void BM_fused_cispo_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::cispo);
}

void BM_fused_reinforce_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::reinforce);
}

void BM_fused_sapo_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::sapo);
}

void BM_fused_gspo_sequence_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::gspo);
}

void BM_fused_gspo_token_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::gspo, rlcore::importance_level::none,
                    rlcore::gspo_level::token);
}

void BM_fused_gmpo_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::gmpo);
}

void BM_fused_clipped_is_sequence_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::clipped, rlcore::importance_level::sequence);
}

void BM_fused_clipped_is_token_loss(benchmark::State& state) {
  fused_policy_loss(state, rlcore::policy_loss::clipped, rlcore::importance_level::token);
}

void BM_gae_advantages(benchmark::State& state) {
  const auto tokens = static_cast<rlcore::index_t>(state.range(0));
  batch& b = cached_batch(tokens);
  auto layout = rlcore::padded(b.view(b.mask));
  const std::size_t bytes =
      static_cast<std::size_t>(tokens) * (2 * 4 + 1 + 2 * 4); // r, V, mask; A, returns
  run(state, tokens, bytes, [&] {
    rlcore::gae_advantages(layout, b.view(b.rewards), b.view(b.values), b.view(b.adv),
                           b.view(b.returns));
  });
}

void BM_grpo_advantages(benchmark::State& state) {
  const auto tokens = static_cast<rlcore::index_t>(state.range(0));
  batch& b = cached_batch(tokens);
  auto layout = rlcore::padded(b.view(b.mask));
  const std::size_t bytes = static_cast<std::size_t>(tokens) * (1 + 4);
  run(state, tokens, bytes, [&] {
    const auto stats =
        rlcore::grpo_outcome_advantages(layout, b.scores, rlcore::uniform_groups{5}, b.view(b.adv));
    benchmark::DoNotOptimize(stats);
  });
}

// The floor itself, for reference: a copy of the fused GRPO loss's traffic / 2 with
// state.range(1) threads (0 = one per hardware thread).
void BM_copy_floor_grpo_bytes(benchmark::State& state) {
  const auto tokens = static_cast<std::size_t>(state.range(0));
  const int threads = resolved_threads(static_cast<int>(state.range(1)));
  const std::size_t bytes = tokens * (4 * 4 + 1 + 4) / 2;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  for (auto _ : state) {
    parallel_copy(src, dst, threads);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(tokens));
  state.counters["GB/s"] = benchmark::Counter(double(2 * bytes) * double(state.iterations()),
                                              benchmark::Counter::kIsRate);
}

} // namespace

BENCHMARK(BM_copy_floor_grpo_bytes)
    ->ArgsProduct({{10000, 100000, 1000000, 10000000}, {1, 2, 4, 8, 16, 0}})
    ->UseRealTime();
BENCHMARK(BM_fused_grpo_loss)
    ->ArgsProduct({{10000, 100000, 1000000, 10000000}, {1, 2, 4, 8, 16, 0}})
    ->UseRealTime();
BENCHMARK(BM_fused_grpo_loss_fma)
    ->ArgsProduct({{10000, 100000, 1000000, 10000000}, {1, 2, 4, 8, 16, 0}})
    ->UseRealTime();
BENCHMARK(BM_fused_grpo_loss_baseline_isa)
    ->ArgsProduct({{10000, 100000, 1000000, 10000000}, {1}})
    ->UseRealTime();
BENCHMARK(BM_fused_cispo_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_fused_reinforce_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_fused_sapo_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_fused_gspo_sequence_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_fused_gspo_token_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_fused_gmpo_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_fused_clipped_is_sequence_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_fused_clipped_is_token_loss)->Arg(1000000)->Arg(10000000)->UseRealTime();
BENCHMARK(BM_gae_advantages)->RangeMultiplier(10)->Range(10000, 10000000)->UseRealTime();
BENCHMARK(BM_grpo_advantages)->RangeMultiplier(10)->Range(10000, 10000000)->UseRealTime();

// Records the build (compiler, flags) and the host kernels' instruction set with the results.
int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::AddCustomContext("compiler", __VERSION__);
#ifdef RLCORE_BENCH_CXX_FLAGS
  benchmark::AddCustomContext("cxx_flags", RLCORE_BENCH_CXX_FLAGS);
#endif
  const char* isa_names[] = {"baseline", "avx2", "avx512"};
  benchmark::AddCustomContext("rlcore_host_isa",
                              isa_names[static_cast<int>(rlcore::supported_host_isa())]);
  benchmark::AddCustomContext("hardware_threads",
                              std::to_string(std::thread::hardware_concurrency()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

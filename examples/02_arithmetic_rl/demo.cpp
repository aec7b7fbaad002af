#include "demo.hpp"

#include "optimizer.hpp"
#include "sampling.hpp"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace arith {

namespace {

double peak_rss_mb(const rusage& usage) {
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// Plain-old-data image of an rl_result for the pipe from a child process.
struct result_header {
  rl_method method;
  double accuracy_before, accuracy_after, seconds, wall_seconds;
  phase_times time;
  long sampled_tokens;
  std::size_t model_bytes;
  std::size_t steps;
};

void write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) {
      std::_Exit(3);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

bool read_all(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r <= 0) {
      return false;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void print_step(std::ostream& out, rl_method method, const step_record& s, int steps) {
  std::ostringstream line;
  line << std::fixed << "[" << std::setw(12) << method_name(method) << "] step " << std::setw(3)
       << s.step << "/" << steps << "  reward " << std::setprecision(3) << s.reward << "  acc ";
  if (s.accuracy >= 0) {
    line << std::setprecision(3) << s.accuracy;
  } else {
    line << "  -  ";
  }
  line << "  kl " << std::setprecision(4) << s.kl << "  clip " << std::setprecision(3)
       << s.clip_fraction << "  tok/s " << std::setprecision(0) << s.tokens_per_second << "  t "
       << std::setprecision(1) << s.seconds << "s\n";
  out << line.str() << std::flush;
}

void write_csv(const std::string& path, const rl_result& r) {
  std::ofstream csv(path);
  csv << "step,seconds,sampled_tokens,reward,accuracy,kl,clip_fraction,value_clip_fraction,"
         "tokens_per_second\n";
  csv << "0,0,0,," << r.accuracy_before << ",,,,\n";
  for (const auto& s : r.steps) {
    csv << s.step << "," << s.seconds << "," << s.sampled_tokens << "," << s.reward << ",";
    if (s.accuracy >= 0) {
      csv << s.accuracy;
    }
    csv << "," << s.kl << "," << s.clip_fraction << "," << s.value_clip_fraction << ","
        << s.tokens_per_second << "\n";
  }
}

void write_plots(const std::string& dir, const std::vector<method_summary>& summaries,
                 std::ostream& out) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    out << "gnuplot not found: no plots (the CSV files hold the curves)\n";
    return;
  }
  const std::string script = dir + "/plots.gp";
  std::ofstream gp(script);
  gp << "set datafile separator ','\nset key bottom right\nset grid\n"
        "set terminal pngcairo size 900,560 noenhanced\nset ylabel 'held-out greedy accuracy'\n"
        "set yrange [0:1]\n";
  for (int plot = 0; plot < 2; ++plot) {
    gp << "set output '" << dir
       << (plot == 0 ? "/accuracy_vs_step.png" : "/accuracy_vs_seconds.png") << "'\nset xlabel '"
       << (plot == 0 ? "RL step" : "RL CPU time (s, evaluation excluded)") << "'\nplot ";
    for (size_t i = 0; i < summaries.size(); ++i) {
      const char* name = method_name(summaries[i].result.method);
      gp << (i ? ", " : "") << "'" << dir << "/" << name << ".csv' using " << (plot == 0 ? 1 : 2)
         << ":($5 == $5 ? $5 : NaN) every ::1 with linespoints title '" << name << "'";
    }
    gp << "\n";
  }
  gp.close();
  const std::string cmd = "gnuplot '" + script + "' 2>/dev/null";
  if (std::system(cmd.c_str()) == 0) {
    out << "plots: " << dir << "/accuracy_vs_step.png, " << dir << "/accuracy_vs_seconds.png\n";
  } else {
    out << "gnuplot failed: no plots\n";
  }
}

} // namespace

demo_options quick_options() {
  demo_options o;
  // Width 32 (0.027 M parameters, a quarter of the default's matmul work per token); SFT on
  // batches of 32 reaches the 20 % target at step 575 (seed 1); about 8 s of CPU in all.
  o.model.channels = 32;
  o.sft_steps = 800;
  o.sft_batch = 32;
  o.sft_target_accuracy = 0.2;
  // RL: 30 stages of 16 prompts x G = 8 with mu = 2 (the second update reuses the samples), so
  // the mean sampled reward rises by several standard errors between the first and last thirds.
  o.rl.steps = 30;
  o.rl.prompts_per_step = 16;
  o.rl.inner_updates = 2;
  o.rl.eval_every = 10;
  o.eval_problems = 200;
  o.methods = {rl_method::grpo_outcome};
  o.isolate = false;
  o.plots = false;
  return o;
}

void print_table(const std::vector<method_summary>& summaries, std::ostream& out) {
  out << "\n| method | acc before | acc after | RL wall s | RL CPU s | sampling | policy f+b | "
         "critic f+b | reference fwd | objective | CPU s / 1k tokens | model MB | peak RSS MB |\n"
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& s : summaries) {
    const rl_result& r = s.result;
    std::ostringstream row;
    row << std::fixed << std::setprecision(1) << "| " << method_name(r.method) << " | "
        << 100 * r.accuracy_before << "% | " << 100 * r.accuracy_after << "% | "
        << std::setprecision(2) << r.wall_seconds << " | " << r.seconds << " | " << r.time.sampling
        << " | " << r.time.policy << " | " << r.time.critic << " | " << r.time.reference << " | "
        << r.time.objective << " | " << std::setprecision(3)
        << (r.sampled_tokens > 0 ? 1000.0 * r.seconds / static_cast<double>(r.sampled_tokens) : 0)
        << " | " << std::setprecision(1) << static_cast<double>(r.model_bytes) / (1 << 20) << " | "
        << s.peak_rss_mb << " |\n";
    out << row.str();
  }
  out << "(seconds; phases in CPU time of the training thread; evaluation excluded; model MB = "
         "parameters, gradients, AdamW state and activations held)\n";
}

std::vector<method_summary> run_demo(const demo_options& options, std::ostream& out) {
  const auto start = std::chrono::steady_clock::now();
  std::filesystem::create_directories(options.out_dir);
  const problem_split split = make_split(options.test_fraction, options.seed);
  const std::vector<problem> eval(
      split.test.begin(),
      split.test.begin()
          + std::min<long>(options.eval_problems, static_cast<long>(split.test.size())));
  out << "arithmetic RL demo: " << split.train.size() << " train / " << split.test.size()
      << " held-out problems (accuracy on " << eval.size()
      << "), model d=" << options.model.channels << " L=" << options.model.layers
      << " heads=" << options.model.heads << "\n";

  // Stage 1: supervised warm-up (or a given checkpoint).
  transformer<float> sft(options.model, options.seed);
  const std::string checkpoint = options.out_dir + "/sft.bin";
  if (!options.sft_checkpoint.empty()) {
    sft = load_checkpoint<float>(options.sft_checkpoint);
    out << "loaded SFT checkpoint " << options.sft_checkpoint << "\n";
  } else {
    adamw<float> optimizer;
    optimizer.options.learning_rate = options.sft_learning_rate;
    std::mt19937_64 rng(options.seed + 100);
    const auto t0 = std::chrono::steady_clock::now();
    for (int step = 1; step <= options.sft_steps; ++step) {
      std::vector<problem> batch;
      for (int i = 0; i < options.sft_batch; ++i) {
        batch.push_back(split.train[static_cast<size_t>(rng() % split.train.size())]);
      }
      const double loss = sft_step(sft, optimizer, batch, 1.0);
      const bool check = step % 25 == 0 || step == options.sft_steps;
      const double accuracy = check ? greedy_accuracy(sft, eval) : -1.0;
      const bool done = step == options.sft_steps || accuracy >= options.sft_target_accuracy;
      if (step % 50 == 0 || done) {
        std::ostringstream line;
        line << std::fixed << std::setprecision(3) << "[         sft] step " << std::setw(3) << step
             << "/" << options.sft_steps << "  loss " << loss << "  acc " << accuracy << "  t "
             << std::setprecision(1)
             << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
             << "s\n";
        out << line.str() << std::flush;
      }
      if (done) {
        break;
      }
    }
    save_checkpoint(checkpoint, sft);
    out << "saved SFT checkpoint " << checkpoint << "\n";
  }

  // Stage 2: each RL method from the same checkpoint.
  std::vector<method_summary> summaries;
  for (rl_method method : options.methods) {
    auto progress = [&](const step_record& s) { print_step(out, method, s, options.rl.steps); };
    method_summary summary;
    if (!options.isolate) {
      summary.result = train_rl(sft, split.train, eval, method, options.rl, progress);
      rusage usage{};
      getrusage(RUSAGE_SELF, &usage);
      summary.peak_rss_mb = peak_rss_mb(usage);
    } else {
      out << std::flush;
      int fds[2];
      if (pipe(fds) != 0) {
        throw std::runtime_error("run_demo: pipe failed");
      }
      const pid_t pid = fork();
      if (pid < 0) {
        throw std::runtime_error("run_demo: fork failed");
      }
      if (pid == 0) { // child: run, send the result, exit without unwinding the parent's state
        ::close(fds[0]);
        const rl_result r = train_rl(sft, split.train, eval, method, options.rl, progress);
        out << std::flush;
        const result_header h{r.method,         r.accuracy_before, r.accuracy_after,
                              r.seconds,        r.wall_seconds,    r.time,
                              r.sampled_tokens, r.model_bytes,     r.steps.size()};
        write_all(fds[1], &h, sizeof h);
        write_all(fds[1], r.steps.data(), r.steps.size() * sizeof(step_record));
        ::close(fds[1]);
        std::_Exit(0);
      }
      ::close(fds[1]);
      result_header h{};
      bool ok = read_all(fds[0], &h, sizeof h);
      if (ok) {
        summary.result.steps.resize(h.steps);
        ok = read_all(fds[0], summary.result.steps.data(), h.steps * sizeof(step_record));
      }
      ::close(fds[0]);
      int status = 0;
      rusage usage{};
      wait4(pid, &status, 0, &usage);
      if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw std::runtime_error(std::string("run_demo: the ") + method_name(method)
                                 + " run failed");
      }
      summary.result.method = h.method;
      summary.result.accuracy_before = h.accuracy_before;
      summary.result.accuracy_after = h.accuracy_after;
      summary.result.seconds = h.seconds;
      summary.result.wall_seconds = h.wall_seconds;
      summary.result.time = h.time;
      summary.result.sampled_tokens = h.sampled_tokens;
      summary.result.model_bytes = h.model_bytes;
      summary.peak_rss_mb = peak_rss_mb(usage);
    }
    write_csv(options.out_dir + "/" + method_name(method) + ".csv", summary.result);
    summaries.push_back(std::move(summary));
  }

  print_table(summaries, out);
  std::ofstream table(options.out_dir + "/summary.md");
  print_table(summaries, table);
  if (options.plots) {
    write_plots(options.out_dir, summaries, out);
  }
  out << "total wall time " << std::fixed << std::setprecision(1)
      << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
      << " s; CSV logs in " << options.out_dir << "/\n";
  return summaries;
}

} // namespace arith

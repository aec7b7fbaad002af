// arithmetic_rl: SFT warm-up, then GRPO (outcome / process) and PPO through rlcore. See --help.
#include "demo.hpp"

#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

namespace {

void print_help(const arith::demo_options& d) {
  const auto& r = d.rl;
  std::cout
      << "usage: arithmetic_rl [options]\n"
         "A tiny transformer learns 2-digit addition (\"37+85=\" -> \"122\"): supervised warm-up\n"
         "to an imperfect policy, then RL from that checkpoint with GRPO (outcome and process\n"
         "supervision) and PPO with a critic, every RL formula from rlcore.\n\n"
         "  --quick                 small run (about 10 s): width-32 model, short SFT,\n"
         "                          30 GRPO-outcome stages (the run tests/examples checks)\n"
         "  --methods LIST          comma list of grpo-outcome,grpo-process,ppo (default: all)\n"
         "  --sft-steps N           supervised warm-up steps (default "
      << d.sft_steps << ")\n"
      << "  --sft-lr X              supervised learning rate (default " << d.sft_learning_rate
      << ")\n"
      << "  --sft-batch N           supervised batch size (default " << d.sft_batch << ")\n"
      << "  --sft-target X          stop SFT at this held-out greedy accuracy (default "
      << d.sft_target_accuracy << ")\n"
      << "  --sft-checkpoint PATH   load this SFT checkpoint instead of training one\n"
         "  --steps N               RL sampling stages per method (default "
      << r.steps << ")\n"
      << "  --prompts N             prompts per stage (default " << r.prompts_per_step << ")\n"
      << "  --group-size G          samples per prompt (default " << r.group_size << ")\n"
      << "  --mu N                  inner updates per stage (default " << r.inner_updates << ")\n"
      << "  --lr X                  policy learning rate (default " << r.learning_rate << ")\n"
      << "  --critic-lr X           PPO critic learning rate (default " << r.critic_learning_rate
      << ")\n"
      << "  --beta X                k3 KL penalty coefficient (default " << r.beta << ")\n"
      << "  --clip X                ratio clip epsilon (default " << r.clip_eps << ")\n"
      << "  --value-clip X          PPO value clip range (default " << r.value_clip << ")\n"
      << "  --gamma X --lambda X    PPO GAE (default " << r.gamma << ", " << r.lambda << ")\n"
      << "  --temperature X         sampling temperature (default " << r.temperature << ")\n"
      << "  --ref-reset K           reference := policy every K stages (default 0 = frozen SFT)\n"
         "  --eval-every K          held-out greedy accuracy every K stages (default "
      << r.eval_every << ")\n"
      << "  --eval-problems N       held-out problems evaluated (default " << d.eval_problems
      << ")\n"
      << "  --width C --layers L --heads H   model size (default " << d.model.channels << ", "
      << d.model.layers << ", " << d.model.heads << ")\n"
      << "  --seed N                seed of split, init and sampling (default " << d.seed << ")\n"
      << "  --out DIR               CSV logs, checkpoint, table, plots (default " << d.out_dir
      << ")\n"
      << "  --no-isolate            run the methods in this process (no per-method peak memory)\n"
         "  --no-plots              skip gnuplot\n"
         "  --help                  this text\n";
}

} // namespace

int main(int argc, char** argv) {
  using namespace arith;
  demo_options o;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick") {
      o = quick_options();
    }
  }
  try {
    std::map<std::string, std::function<void(const std::string&)>> with_value{
        {"--methods",
         [&](const std::string& v) {
           o.methods.clear();
           std::stringstream list(v);
           for (std::string name; std::getline(list, name, ',');) {
             o.methods.push_back(parse_method(name));
           }
         }},
        {"--sft-steps", [&](const std::string& v) { o.sft_steps = std::stoi(v); }},
        {"--sft-checkpoint", [&](const std::string& v) { o.sft_checkpoint = v; }},
        {"--sft-lr", [&](const std::string& v) { o.sft_learning_rate = std::stod(v); }},
        {"--sft-batch", [&](const std::string& v) { o.sft_batch = std::stoi(v); }},
        {"--sft-target", [&](const std::string& v) { o.sft_target_accuracy = std::stod(v); }},
        {"--steps", [&](const std::string& v) { o.rl.steps = std::stoi(v); }},
        {"--prompts", [&](const std::string& v) { o.rl.prompts_per_step = std::stoi(v); }},
        {"--group-size", [&](const std::string& v) { o.rl.group_size = std::stoi(v); }},
        {"--mu", [&](const std::string& v) { o.rl.inner_updates = std::stoi(v); }},
        {"--lr", [&](const std::string& v) { o.rl.learning_rate = std::stod(v); }},
        {"--critic-lr", [&](const std::string& v) { o.rl.critic_learning_rate = std::stod(v); }},
        {"--beta", [&](const std::string& v) { o.rl.beta = std::stod(v); }},
        {"--clip", [&](const std::string& v) { o.rl.clip_eps = std::stod(v); }},
        {"--value-clip", [&](const std::string& v) { o.rl.value_clip = std::stod(v); }},
        {"--gamma", [&](const std::string& v) { o.rl.gamma = std::stod(v); }},
        {"--lambda", [&](const std::string& v) { o.rl.lambda = std::stod(v); }},
        {"--temperature", [&](const std::string& v) { o.rl.temperature = std::stod(v); }},
        {"--ref-reset", [&](const std::string& v) { o.rl.reference_reset_every = std::stoi(v); }},
        {"--eval-every", [&](const std::string& v) { o.rl.eval_every = std::stoi(v); }},
        {"--eval-problems", [&](const std::string& v) { o.eval_problems = std::stoi(v); }},
        {"--width", [&](const std::string& v) { o.model.channels = std::stoi(v); }},
        {"--layers", [&](const std::string& v) { o.model.layers = std::stoi(v); }},
        {"--heads", [&](const std::string& v) { o.model.heads = std::stoi(v); }},
        {"--seed",
         [&](const std::string& v) {
           o.seed = std::stoull(v);
           o.rl.seed = o.seed + 2;
         }},
        {"--out", [&](const std::string& v) { o.out_dir = v; }},
    };
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        print_help(demo_options{});
        return 0;
      }
      if (arg == "--quick") {
        continue;
      }
      if (arg == "--no-isolate") {
        o.isolate = false;
      } else if (arg == "--no-plots") {
        o.plots = false;
      } else if (auto it = with_value.find(arg); it != with_value.end()) {
        if (i + 1 >= argc) {
          std::cerr << "arithmetic_rl: " << arg << " needs a value (see --help)\n";
          return 2;
        }
        it->second(argv[++i]);
      } else {
        std::cerr << "arithmetic_rl: unknown option " << arg << " (see --help)\n";
        return 2;
      }
    }
    run_demo(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "arithmetic_rl: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

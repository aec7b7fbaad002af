#!/usr/bin/env python3
"""PyTorch peers of rlcore's CUDA benchmarks, written from docs' formulas (ALGORITHMS.md):

  GRPO token objective (DeepSeekMath eq. 3, negated): per valid token
      delta = clamp(lp - old, -20, 20); ratio = exp(delta)
      l = max(-A * ratio, -A * clamp(ratio, 1 - 0.2, 1 + 0.2)) + 0.04 * k3(lp - ref)
      k3(x) = exp(-x) + x - 1 (x clamped to [-20, 20])
  aggregated seq-mean-token-mean: loss = mean_i( sum_t l m / n_i ), rows with n_i = 0 give 0;
  forward + backward (d loss / d lp) on 2^24 fp32 tokens (16384 x 1024), the same masks as
  bench_cuda (ragged ends, interior holes).

  GRPO from logits: lp = log_softmax(z)[id] from bf16 logits 16 x 1024 x 152064 (fp32 math),
  the same loss, forward + backward d loss / d logits (bf16).

Eager and torch.compile, timed with CUDA events (median of 5 batches). Prints a table and writes
JSON (--json). With --rlcore FILE (bench_cuda's JSON) it prints rlcore's speed-ups.
"""
import argparse
import json
import sys

import torch


def time_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    batches = []
    for _ in range(5):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        batches.append(start.elapsed_time(stop) / reps)
    batches.sort()
    return batches[2]


def ragged_mask(rows, cols, device):
    t = torch.arange(cols, device=device).unsqueeze(0)
    r = torch.arange(rows, device=device).unsqueeze(1)
    return ((t < cols - (r % 7) * 13) & (t % 29 != 5)).to(torch.uint8)


def grpo_token_loss(lp, old, ref, adv, mask, eps=0.2, beta=0.04, clamp=20.0):
    delta = torch.clamp(lp - old, -clamp, clamp)
    ratio = torch.exp(delta)
    surrogate = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps))
    x = torch.clamp(lp - ref, -clamp, clamp)
    k3 = torch.expm1(-x) + x
    per_token = surrogate + beta * k3
    m = mask.to(per_token.dtype)
    n = m.sum(dim=1)
    row = torch.where(n > 0, (per_token * m).sum(dim=1) / n.clamp_min(1), torch.zeros_like(n))
    return row.mean()


def objective_step(lp, old, ref, adv, mask):
    lp = lp.detach().requires_grad_(True)
    loss = grpo_token_loss(lp, old, ref, adv, mask)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad


def logits_loss(logits, ids, old, ref, adv, mask):
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return grpo_token_loss(lp, old, ref, adv, mask)


def logits_step(logits, ids, old, ref, adv, mask):
    logits = logits.detach().requires_grad_(True)
    loss = logits_loss(logits, ids, old, ref, adv, mask)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--rlcore")
    parser.add_argument("--skip-logits", action="store_true")
    args = parser.parse_args()
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    results = {}

    nbytes = 1 << 31
    a = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    b = torch.empty_like(a)
    copy_ms = time_ms(lambda: b.copy_(a), 10)
    bandwidth = 2 * nbytes / copy_ms  # bytes per ms
    print(f"copy bandwidth (read + write): {bandwidth / 1e9:.3f} TB/s")
    del a, b

    def record(name, ms, floor_bytes):
        floor = floor_bytes / bandwidth
        results[name] = {"ms": ms, "floor_ms": floor, "fraction": floor / ms}
        print(f"{name:<52} {ms:9.3f} ms  floor {floor:8.4f} ms  {100 * floor / ms:5.1f}%", flush=True)

    rows, cols = 16384, 1024
    g = torch.Generator(device=dev).manual_seed(0)
    lp = -0.1 - 2.9 * torch.rand(rows, cols, device=dev, generator=g)
    old = -0.1 - 2.9 * torch.rand(rows, cols, device=dev, generator=g)
    ref = -0.1 - 2.9 * torch.rand(rows, cols, device=dev, generator=g)
    adv = 2 * torch.rand(rows, cols, device=dev, generator=g) - 1
    mask = ragged_mask(rows, cols, dev)
    token_bytes = 21.0 * rows * cols
    record("torch eager: GRPO token objective fwd+bwd 2^24",
           time_ms(lambda: objective_step(lp, old, ref, adv, mask), 10), token_bytes)
    compiled = torch.compile(objective_step)
    record("torch.compile: GRPO token objective fwd+bwd 2^24",
           time_ms(lambda: compiled(lp, old, ref, adv, mask), 10, warmup=3), token_bytes)
    del lp, old, ref, adv, mask

    if not args.skip_logits:
        n, t, vocab = 16, 1024, 152064
        logits = (12 * torch.rand(n * t, vocab, device=dev, generator=g) - 6).to(torch.bfloat16)
        ids = (torch.arange(n * t, device=dev) * 7919) % vocab
        old = -13 + 2 * torch.rand(n * t, device=dev, generator=g)
        ref = -13 + 2 * torch.rand(n * t, device=dev, generator=g)
        adv = 2 * torch.rand(n * t, device=dev, generator=g) - 1
        mask = ragged_mask(n, t, dev).reshape(-1)
        shape = lambda x: x.reshape(n, t)
        logit_bytes = 2.0 * 2 * n * t * vocab
        step = lambda: logits_step(logits, shape(ids), shape(old), shape(ref), shape(adv), shape(mask))
        try:
            record("torch eager: GRPO from bf16 logits fwd+bwd", time_ms(lambda: logits_step(
                logits.reshape(n, t, vocab), shape(ids), shape(old), shape(ref), shape(adv),
                shape(mask)), 2, warmup=1), logit_bytes)
            compiled_logits = torch.compile(logits_step)
            record("torch.compile: GRPO from bf16 logits fwd+bwd", time_ms(lambda: compiled_logits(
                logits.reshape(n, t, vocab), shape(ids), shape(old), shape(ref), shape(adv),
                shape(mask)), 2, warmup=2), logit_bytes)
        except torch.OutOfMemoryError as e:  # pragma: no cover
            print("logits peer skipped:", e)
        del step

    if args.rlcore:
        with open(args.rlcore) as f:
            ours = {r["name"]: r for r in json.load(f)["results"]}
        pairs = [("fused GRPO token objective, 2^24 fp32 tokens (fwd+bwd)",
                  "GRPO token objective fwd+bwd 2^24"),
                 ("fused GRPO from bf16 logits 16x1024x152064 (fwd+bwd)",
                  "GRPO from bf16 logits fwd+bwd")]
        for mine, theirs in pairs:
            for kind in ("torch eager", "torch.compile"):
                key = f"{kind}: {theirs}"
                if mine in ours and key in results:
                    speedup = results[key]["ms"] / ours[mine]["ms"]
                    results[key]["rlcore_speedup"] = speedup
                    print(f"rlcore vs {key}: {speedup:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "copy_bandwidth_TBps": bandwidth / 1e9, "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())

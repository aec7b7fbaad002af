#!/usr/bin/env python3
"""Golden values for tests/advantage/test_golden.cpp from an independent PyTorch reference.

Written from the formulas of ALGORITHMS.md (and, where they agree, the verl / OpenRLHF loops),
not from rlcore, in float64:
  GRPO        a_i = (s_i - mean_g) / (std_g + eps), std unbiased or population; batch scaling
              divides by the std of all scores; none (Dr. GRPO) = s_i - mean_g
  RLOO        a_i = s_i - (sum_g - s_i) / (G - 1)
  OPO         a_i = s_i - sum_j n_j s_j / sum_j n_j, n_j = valid tokens of j
  pass@k      best of group gets (s_max - s_second) [/ (std_g + eps)], others 0
  GAE         verl's masked loop (carries kept through masked tokens), returns = A + V
  REINFORCE++ G_t = r_t + gamma G_next over valid tokens (carry kept through masked tokens),
              then masked whitening (x - mean) * rsqrt(var + 1e-8)
  baseline    s_i = sum of valid rewards, b = group mean of s, subtracted from the reward of the
              last valid token, then as REINFORCE++
  ReMax       verl: suffix sum of the masked rewards - b_i (gamma = 1)
  process     step rewards normalised over the group's steps, suffix sums over steps
  GDPO        per-group per-column standardisation, weighted sum, batch standardisation
Masked entries hold garbage (1e3) that must never reach a result; masked outputs are 0.

Run with /usr/bin/python3 (CPU PyTorch): writes tests/golden/advantages_cases.txt.
Format: a line "case <name> <rows> <cols>", then lines "<field> <values...>" (row-major).
"""
import os

import torch

torch.manual_seed(2024)
torch.set_default_dtype(torch.float64)
GARBAGE = 1e3


def random_mask(n, t, min_len=0):
    mask = torch.zeros(n, t, dtype=torch.bool)
    for i in range(n):
        length = int(torch.randint(min_len, t + 1, ()).item())
        mask[i, :length] = torch.rand(length) > 0.2
    return mask


def masked_whiten(x, mask, unbiased=True, mean_only=False, eps=1e-8):
    m = mask.double()
    n = m.sum()
    mean = (torch.where(mask, x, torch.zeros_like(x))).sum() / n
    centred = torch.where(mask, x - mean, torch.zeros_like(x))
    if mean_only:
        return centred
    var = (centred ** 2).sum() / (n - 1 if unbiased else n)
    return centred * torch.rsqrt(var + eps)


def grpo(scores, g, unbiased, eps, scaling):
    grouped = scores.view(-1, g)
    mean = grouped.mean(-1, keepdim=True)
    if scaling == "none":
        return (grouped - mean).reshape(-1)
    if scaling == "batch":
        std = scores.std(unbiased=unbiased)
    else:
        std = grouped.std(-1, unbiased=unbiased, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)


def rloo(scores, g):
    grouped = scores.view(-1, g)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (g - 1)
    return (grouped - baseline).reshape(-1)


def opo(scores, lengths, g):
    s = scores.view(-1, g)
    n = lengths.view(-1, g)
    baseline = (n * s).sum(-1, keepdim=True) / n.sum(-1, keepdim=True)
    return (s - baseline).reshape(-1)


def pass_at_k(scores, g, divide, eps):
    out = torch.zeros_like(scores)
    for start in range(0, scores.numel(), g):
        group = scores[start:start + g]
        top, idx = torch.topk(group, 2)
        adv = top[0] - top[1]
        if divide:
            adv = adv / (group.std() + eps)
        out[start + int(idx[0])] = adv
    return out


def gae(r, v, mask, gamma, lam):
    n, t_len = r.shape
    next_values = torch.zeros(n)
    last = torch.zeros(n)
    adv = torch.zeros(n, t_len)
    for t in reversed(range(t_len)):
        m = mask[:, t]
        delta = r[:, t] + gamma * next_values - v[:, t]
        candidate = delta + gamma * lam * last
        next_values = torch.where(m, v[:, t], next_values)
        last = torch.where(m, candidate, last)
        adv[:, t] = last
    zero = torch.zeros_like(adv)
    return torch.where(mask, adv, zero), torch.where(mask, adv + v, zero)


def returns_to_go(r, mask, gamma):
    n, t_len = r.shape
    running = torch.zeros(n)
    out = torch.zeros(n, t_len)
    for t in reversed(range(t_len)):
        m = mask[:, t]
        running = torch.where(m, r[:, t] + gamma * running, running)
        out[:, t] = torch.where(m, running, torch.zeros(n))
    return out


def last_valid_index(mask):
    idx = []
    for row in mask:
        valid = torch.nonzero(row).view(-1)
        idx.append(int(valid[-1]) if valid.numel() else -1)
    return idx


def process(step_rewards, ends, mask, g):
    is_step = ends & mask
    out = torch.zeros_like(step_rewards)
    for start in range(0, step_rewards.shape[0], g):
        rows = slice(start, start + g)
        values = step_rewards[rows][is_step[rows]]
        mean = values.mean()
        std = values.std() if values.numel() > 1 else torch.tensor(0.0)
        norm = torch.where(is_step[rows], (step_rewards[rows] - mean) / (std + 1e-6),
                           torch.zeros_like(step_rewards[rows]))
        suffix = norm.flip(-1).cumsum(-1).flip(-1)
        out[rows] = torch.where(mask[rows], suffix, torch.zeros_like(suffix))
    return out


def gdpo(columns, weights, g, normalize_batch, eps=1e-6):
    n, k = columns.shape
    total = torch.zeros(n)
    for c in range(k):
        grouped = columns[:, c].view(-1, g)
        mean = grouped.mean(-1, keepdim=True)
        std = grouped.std(-1, keepdim=True)
        total += weights[c] * ((grouped - mean) / (std + eps)).reshape(-1)
    if normalize_batch:
        total = (total - total.mean()) / (total.std() + eps)
    return total


def fmt(name, rows, cols, fields):
    lines = [f"case {name} {rows} {cols}"]
    for key, value in fields:
        flat = value.detach().double().reshape(-1).tolist()
        lines.append(key + " " + " ".join(repr(float(v)) for v in flat))
    return "\n".join(lines)


def group_case():
    n, g, t = 12, 4, 4
    scores = torch.randint(0, 9, (n,)).double() / 8.0
    scores[4:8] = 0.625  # a zero-spread group
    for start in range(0, n, g):  # distinct maximum per non-constant group (pass@k ties)
        group = scores[start:start + g]
        if group.max() != group.min():
            scores[start + int(torch.argmax(group))] += 0.03125
    mask = random_mask(n, t, min_len=1)
    mask[:, 0] = True  # every sequence has a valid token (OPO weights > 0)
    lengths = mask.double().sum(-1)
    eps = 1e-6
    return fmt("group", n, t, [
        ("mask", mask.double()), ("scores", scores),
        ("grpo_group_unbiased", grpo(scores, g, True, eps, "group")),
        ("grpo_group_population", grpo(scores, g, False, eps, "group")),
        ("grpo_batch", grpo(scores, g, True, eps, "batch")),
        ("grpo_none", grpo(scores, g, True, eps, "none")),
        ("rloo", rloo(scores, g)), ("opo", opo(scores, lengths, g)),
        ("pass_at_k", pass_at_k(scores, g, True, eps)),
        ("pass_at_k_raw", pass_at_k(scores, g, False, eps)),
    ])


def token_case():
    n, t = 6, 7
    mask = random_mask(n, t, min_len=2)
    mask[:, 0] = True
    rewards = torch.where(mask, torch.randn(n, t), torch.full((n, t), GARBAGE))
    values = torch.where(mask, torch.randn(n, t), torch.full((n, t), -GARBAGE))
    gamma, lam = 0.95, 0.9
    gae_adv, gae_ret = gae(rewards, values, mask, gamma, lam)
    ret = returns_to_go(rewards, mask, gamma)
    # baseline: group mean (G = 2) of the sequence scores at each row's last valid token
    scores = torch.where(mask, rewards, torch.zeros_like(rewards)).sum(-1)
    baseline = scores.view(-1, 2).mean(-1, keepdim=True).expand(-1, 2).reshape(-1)
    shifted = rewards.clone()
    for i, last in enumerate(last_valid_index(mask)):
        shifted[i, last] -= baseline[i]
    base_ret = returns_to_go(shifted, mask, gamma)
    greedy = torch.randn(n)
    masked_r = torch.where(mask, rewards, torch.zeros_like(rewards))
    remax = masked_r.flip(-1).cumsum(-1).flip(-1) - greedy.unsqueeze(-1) * mask.double()
    remax = torch.where(mask, remax, torch.zeros_like(remax))
    ends = (torch.rand(n, t) > 0.6) & mask
    step_rewards = torch.where(ends, torch.randn(n, t), torch.full((n, t), GARBAGE))
    return fmt("token", n, t, [
        ("mask", mask.double()), ("rewards", rewards), ("values", values),
        ("gae_adv", gae_adv), ("gae_ret", gae_ret),
        ("gae_adv_whitened", masked_whiten(gae_adv, mask)),
        ("rpp_ret", ret), ("rpp_adv", masked_whiten(ret, mask)),
        ("rpp_adv_population", masked_whiten(ret, mask, unbiased=False)),
        ("rpp_baseline_adv", masked_whiten(base_ret, mask)),
        ("greedy", greedy), ("remax_adv", remax),
        ("step_ends", ends.double()), ("step_rewards", step_rewards),
        ("process_adv", process(step_rewards, ends, mask, 2)),
        ("whiten_mean_only", masked_whiten(rewards, mask, mean_only=True)),
    ])


def reward_case():
    n, k, g = 6, 3, 3
    columns = torch.randint(0, 4, (n, k)).double() / 4.0
    columns[:, 1] = torch.randn(n)
    weights = torch.tensor([1.0, 0.5, 2.0])
    return fmt("reward", n, k, [
        ("columns", columns), ("weights", weights),
        ("weighted_sum", columns @ weights),
        ("gdpo", gdpo(columns, weights, g, True)),
        ("gdpo_no_batch", gdpo(columns, weights, g, False)),
    ])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "tests", "golden", "advantages_cases.txt")
    text = "\n".join([f"# generated by scripts/golden/advantages.py (PyTorch {torch.__version__})",
                      group_case(), token_case(), reward_case()])
    with open(path, "w") as f:
        f.write(text + "\n")
    print("wrote", os.path.normpath(path), len(text), "bytes")


if __name__ == "__main__":
    main()

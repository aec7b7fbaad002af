#!/usr/bin/env python3
"""Golden values for tests/objective/test_golden.cpp from an independent PyTorch reference.

Written from the formulas of ALGORITHMS.md (not from rlcore), in float64, gradients by torch
autograd (stop-gradients by .detach()):
  clipped   l = max(-A r, -A clamp(r, 1 - el, 1 + eh)); dual clip: where A < 0, min(l, -c A)
  GSPO      s_i = exp(sum_t m delta / n_i); sequence level: A_i = masked mean of A, every token
            carries l_i = max(-A_i s_i, -A_i clamp(s_i)); token level: s_it = exp(lp - lp.detach()
            + log s_i.detach()) with the token's own A
  GMPO      m = sign(A) min(sign(A) d, sign(A) clamp(d, -el, eh)), S_i = exp(sum m / n_i),
            l_i = -A_i S_i on every token of row i
  CISPO     l = -min(r, 1 + eh).detach() A lp
  SAPO      l = -A (4 / tau) sigmoid(tau (r - 1)), tau = 1.0 (A > 0) / 1.05
  REINFORCE l = -A lp
  KL        x = lp - ref: k1 x, abs |x|, k2 x^2/2, k3 exp(-x) + x - 1, k1+/k3+ value with k2's
            gradient (v.detach() + k2 - k2.detach()), k3_importance exp(lp - old) k3
  IS        token w = exp(old - rollout), sequence w_i = exp(sum_t m (old - rollout)), truncated
            min(w, C) or masked w 1[lo <= w <= hi]; constants (detached)
  entropy   loss -= coef H; masking keeps H >= torch.quantile(H[valid], 1 - rho)
  aggregation  token_mean / token_sum / seq_mean_token_sum / seq_mean_token_mean /
            seq_mean_token_sum_norm (L)
  value     0.5 max((v - R)^2, (clamp(v, v_old - c, v_old + c) - R)^2)
Masked slots hold garbage (1e3) that must never reach a result.

Run with /usr/bin/python3 (CPU PyTorch): writes tests/golden/objectives_cases.txt.
Format: "inputs <rows> <cols>" then "<field> <values...>" lines (row-major), then per case
"case <name>", "loss <v>", "grad <values...>", optionally "grad_entropy <values...>".
"""
import os

import torch

torch.manual_seed(7)
torch.set_default_dtype(torch.float64)
GARBAGE = 1e3
N, T = 4, 6

mask = (torch.rand(N, T) < 0.8).double()
mask[1, :] = torch.tensor([1, 1, 0, 1, 0, 0.0])  # interior hole
mask[3, :] = 0  # all-masked row
mask[0, :] = 1
lp0 = -0.05 - 2.5 * torch.rand(N, T)
old = lp0 - (torch.rand(N, T) - 0.5)
ref = lp0 - 1.2 * (torch.rand(N, T) - 0.5)
rollout = old - 1.6 * (torch.rand(N, T) - 0.5)
adv = 4 * torch.rand(N, T) - 2
ent0 = 0.1 + 2.9 * torch.rand(N, T)
values0 = torch.randn(N, T)
old_values = values0 + 0.8 * (torch.rand(N, T) - 0.5)
returns = values0 + torch.randn(N, T)
valid = mask > 0
for x in (lp0, old, ref, rollout, adv, ent0, values0, old_values, returns):
    x[~valid] = GARBAGE


def aggregate(loss, mode, L=8.0):
    """Token losses (garbage where masked) -> scalar, masked with torch.where (no 0 * inf)."""
    l = torch.where(valid, loss, torch.zeros_like(loss))
    n = mask.sum(-1)
    if mode == "token_mean":
        return l.sum() / mask.sum()
    if mode == "token_sum":
        return l.sum()
    if mode == "seq_mean_token_sum":
        return l.sum(-1).sum() / N
    if mode == "seq_mean_token_mean":
        per_row = torch.where(n > 0, l.sum(-1) / n.clamp(min=1), torch.zeros_like(n))
        return per_row.sum() / N
    if mode == "seq_mean_token_sum_norm":
        return l.sum() / (N * L)
    raise ValueError(mode)


def row_mean(x):
    n = mask.sum(-1)
    s = torch.where(valid, x, torch.zeros_like(x)).sum(-1)
    return torch.where(n > 0, s / n.clamp(min=1), torch.zeros_like(n))


def kl_value(lp, kind):
    x = (lp - ref).clamp(-20, 20)
    k2 = 0.5 * x * x
    k3 = torch.exp(-x) + x - 1
    if kind == "k1":
        return x
    if kind == "abs":
        return x.abs()
    if kind == "k2":
        return k2
    if kind == "k3":
        return k3
    if kind == "k1_plus":
        return x.detach() + k2 - k2.detach()
    if kind == "k3_plus":
        return k3.detach() + k2 - k2.detach()
    if kind == "k3_importance":
        return torch.exp((lp - old).clamp(-20, 20)) * k3
    raise ValueError(kind)


def policy_term(lp, o):
    delta = (lp - old).clamp(-20, 20)
    ratio = torch.exp(delta)
    form = o.get("loss", "clipped")
    if form == "clipped":
        el, eh = o.get("eps_low", 0.2), o.get("eps_high", 0.2)
        l = torch.max(-adv * ratio, -adv * ratio.clamp(1 - el, 1 + eh))
        if "dual_clip" in o:
            l = torch.where(adv < 0, torch.min(l, -o["dual_clip"] * adv), l)
        return l
    if form in ("gspo_sequence", "gspo_token"):
        el, eh = o["gspo_eps"]
        d = torch.where(valid, delta, torch.zeros_like(delta))
        log_s = row_mean(d)
        if form == "gspo_sequence":
            s = torch.exp(log_s)
            a = row_mean(adv)
            li = torch.max(-a * s, -a * s.clamp(1 - el, 1 + eh))
            return li[:, None].expand(N, T)
        s = torch.exp(lp - lp.detach() + log_s.detach()[:, None])
        return torch.max(-adv * s, -adv * s.clamp(1 - el, 1 + eh))
    if form == "gmpo":
        el, eh = o.get("gmpo_eps", (0.4, 0.4))
        sgn = torch.sign(adv)
        m = sgn * torch.min(sgn * delta, sgn * delta.clamp(-el, eh))
        S = torch.exp(row_mean(m))
        return (-row_mean(adv) * S)[:, None].expand(N, T)
    if form == "cispo":
        eh = o.get("eps_high", 0.2)
        return -ratio.clamp(max=1 + eh).detach() * adv * lp
    if form == "sapo":
        tau = torch.where(adv > 0, torch.full_like(adv, 1.0), torch.full_like(adv, 1.05))
        return -adv * (4 / tau) * torch.sigmoid(tau * (ratio - 1))
    if form == "reinforce":
        return -adv * lp
    raise ValueError(form)


def importance(o):
    level = o.get("is_level")
    if level is None:
        return torch.ones(N, T)
    lw = torch.where(valid, old - rollout, torch.zeros_like(old))
    if level == "sequence":
        lw = lw.sum(-1, keepdim=True).expand(N, T)
    w = torch.exp(lw.clamp(-20, 20))
    if o.get("is_mode", "truncate") == "truncate":
        return w.clamp(max=o.get("is_cap", 2.0))
    lo, hi = o.get("is_range", (0.5, 2.0))
    return torch.where((w >= lo) & (w <= hi), w, torch.zeros_like(w))


def policy_case(o):
    lp = lp0.clone().requires_grad_(True)
    ent = ent0.clone().requires_grad_(True)
    term = policy_term(lp, o) * importance(o)
    if "entropy_top" in o:
        threshold = torch.quantile(ent0[valid], 1 - o["entropy_top"])
        term = torch.where(ent0 >= threshold, term, torch.zeros_like(term))
    total = term
    if o.get("beta", 0) > 0:
        total = total + o["beta"] * kl_value(lp, o.get("kl", "k3"))
    if o.get("entropy_coef", 0) != 0:
        total = total - o["entropy_coef"] * ent
    loss = aggregate(total, o.get("agg", "token_mean"), o.get("L", 8.0))
    loss.backward()
    g = torch.where(valid, lp.grad, torch.zeros_like(lp0))
    ge = torch.where(valid, ent.grad, torch.zeros_like(lp0)) if ent.grad is not None else None
    return loss.item(), g, ge


CASES = {
    "grpo_default": dict(beta=0.04, kl="k3", agg="seq_mean_token_mean"),
    "clip_higher_entropy": dict(eps_high=0.28, entropy_coef=0.01),
    "dual_clip": dict(dual_clip=1.3, agg="seq_mean_token_sum"),
    "gspo_sequence": dict(loss="gspo_sequence", gspo_eps=(0.1, 0.1), agg="seq_mean_token_mean"),
    "gspo_token": dict(loss="gspo_token", gspo_eps=(0.1, 0.1), agg="seq_mean_token_mean"),
    "gmpo": dict(loss="gmpo", agg="seq_mean_token_mean"),
    "cispo": dict(loss="cispo"),
    "sapo": dict(loss="sapo", agg="token_sum"),
    "reinforce_drgrpo": dict(loss="reinforce", agg="seq_mean_token_sum_norm", L=8.0),
    "kl_k1": dict(beta=0.1, kl="k1"),
    "kl_abs": dict(beta=0.1, kl="abs"),
    "kl_k2": dict(beta=0.1, kl="k2"),
    "kl_k1_plus": dict(beta=0.1, kl="k1_plus"),
    "kl_k3_plus": dict(beta=0.1, kl="k3_plus"),
    "kl_k3_importance": dict(beta=0.1, kl="k3_importance"),
    "is_token_truncate": dict(is_level="token", is_cap=1.2),
    "is_sequence_mask": dict(is_level="sequence", is_mode="mask", is_range=(0.5, 2.0)),
    "entropy_mask": dict(entropy_top=0.5, entropy_coef=0.02),
}


def fmt(t):
    return " ".join(repr(float(x)) for x in t.reshape(-1))


def main():
    lines = [f"# generated by scripts/golden/objectives.py (PyTorch {torch.__version__})",
             f"inputs {N} {T}"]
    for name, x in (("mask", mask), ("log_probs", lp0), ("old_log_probs", old),
                    ("ref_log_probs", ref), ("rollout_log_probs", rollout), ("advantages", adv),
                    ("entropy", ent0), ("values", values0), ("old_values", old_values),
                    ("returns", returns)):
        lines.append(f"{name} {fmt(x)}")
    for name, o in CASES.items():
        loss, g, ge = policy_case(o)
        lines += [f"case {name}", f"loss {loss!r}", f"grad {fmt(g)}"]
        if ge is not None:
            lines.append(f"grad_entropy {fmt(ge)}")
    # value loss, c = 0.2 (token_mean)
    v = values0.clone().requires_grad_(True)
    vc = torch.max(torch.min(v, old_values + 0.2), old_values - 0.2)
    l = 0.5 * torch.max((v - returns) ** 2, (vc - returns) ** 2)
    loss = aggregate(l, "token_mean")
    loss.backward()
    lines += ["case value_loss", f"loss {loss.item()!r}",
              f"grad {fmt(torch.where(valid, v.grad, torch.zeros_like(v)))}"]
    # standalone KL penalty, k3, seq_mean_token_mean
    lp = lp0.clone().requires_grad_(True)
    loss = aggregate(kl_value(lp, "k3"), "seq_mean_token_mean")
    loss.backward()
    lines += ["case kl_penalty_k3", f"loss {loss.item()!r}",
              f"grad {fmt(torch.where(valid, lp.grad, torch.zeros_like(lp)))}"]
    out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "golden",
                       "objectives_cases.txt")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", os.path.normpath(out))


if __name__ == "__main__":
    main()

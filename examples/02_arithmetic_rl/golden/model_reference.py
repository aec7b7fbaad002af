#!/usr/bin/env python3
"""Independent PyTorch reference of the example's transformer (examples/02_arithmetic_rl/model.hpp).

Writes tests/examples/golden/model_logits.txt: logits of a small model whose parameters follow a
fixed formula, for fixed tokens, computed in float64 with torch.nn.functional building blocks.
The C++ test fills its one parameter buffer with the same formula (in the order of
parameter_tensors) and must reproduce these values.

Run: /usr/bin/python3 examples/02_arithmetic_rl/golden/model_reference.py
"""
import math
import pathlib

import torch
import torch.nn.functional as F

V, P, C, NH, L, O = 13, 6, 8, 2, 2, 13  # vocab, context, channels, heads, layers, outputs
B, T = 2, 5
TOKENS = [[3, 7, 10, 8, 5], [0, 9, 10, 1, 12]]


def parameter(index):
    """The value of scalar number `index` of the one parameter buffer."""
    return 0.5 * math.sin(0.37 * index + 0.1) + 0.05 * math.cos(1.3 * index)


def take(cursor, *shape):
    n = math.prod(shape)
    values = torch.tensor([parameter(cursor + i) for i in range(n)], dtype=torch.float64)
    return cursor + n, values.reshape(shape)


def main():
    cur = 0
    cur, wte = take(cur, V, C)
    cur, wpe = take(cur, P, C)
    cur, ln1w = take(cur, L, C)
    cur, ln1b = take(cur, L, C)
    cur, qkvw = take(cur, L, 3 * C, C)
    cur, qkvb = take(cur, L, 3 * C)
    cur, attprojw = take(cur, L, C, C)
    cur, attprojb = take(cur, L, C)
    cur, ln2w = take(cur, L, C)
    cur, ln2b = take(cur, L, C)
    cur, fcw = take(cur, L, 4 * C, C)
    cur, fcb = take(cur, L, 4 * C)
    cur, fcprojw = take(cur, L, C, 4 * C)
    cur, fcprojb = take(cur, L, C)
    cur, lnfw = take(cur, C)
    cur, lnfb = take(cur, C)
    cur, headw = take(cur, O, C)
    cur, headb = take(cur, O)

    tokens = torch.tensor(TOKENS)
    x = wte[tokens] + wpe[:T]
    hs = C // NH
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        h = F.layer_norm(x, (C,), ln1w[l], ln1b[l], eps=1e-5)
        q, k, v = F.linear(h, qkvw[l], qkvb[l]).split(C, dim=-1)
        q, k, v = (z.view(B, T, NH, hs).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, attprojw[l], attprojb[l])
        h = F.layer_norm(x, (C,), ln2w[l], ln2b[l], eps=1e-5)
        x = x + F.linear(F.gelu(F.linear(h, fcw[l], fcb[l]), approximate="tanh"), fcprojw[l],
                         fcprojb[l])
    logits = F.linear(F.layer_norm(x, (C,), lnfw, lnfb, eps=1e-5), headw, headb)

    out = pathlib.Path(__file__).resolve().parents[3] / "tests/examples/golden/model_logits.txt"
    with open(out, "w") as f:
        f.write(f"# model_reference.py: V={V} context={P} C={C} NH={NH} L={L} OUT={O} B={B} T={T}"
                f" parameters={cur}\n")
        for value in logits.reshape(-1).tolist():
            f.write(f"{value:.17g}\n")
    print(f"wrote {out} ({B * T * O} logits, {cur} parameters)")


if __name__ == "__main__":
    main()

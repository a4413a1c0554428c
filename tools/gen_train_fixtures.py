#!/usr/bin/env python3
"""Golden gradients, AdamW steps and scale-distillation gradients for the training backward pass.

Reuses the independent PyTorch reference transformer of tools/gen_model_fixtures.py (imported,
not copied) and the tiny model folders it wrote under tests/data/model/. Every weight is loaded
as a float64 leaf tensor and everything below is computed in float64 with autograd, so the C++
tests (tests/train/) can compare against these files without PyTorch in CI.

For each of qwen3_gqa2_tied, llama_gqa4_untied and qwen2_mha_bias it writes
tests/data/train/<name>.safetensors with
  tokens   I32 [B, S]   random ids; every row is its own sequence at positions 0..S-1 (causal
                        attention within the row only)
  targets  I32 [B, S]   the next token of a random (S+1)-token row, a few set to -1 (no loss)
  loss     F64 [1]      mean cross-entropy over the targets that are not -1 (full vocab logits)
  grad.<hf name>        F64, d loss / d parameter, for every parameter (tied embedding: both uses)
  adam.losses, adam.lrs, adam.grad_norms   F64 [3]   loss, lr and pre-clip global grad norm of
                        each of 3 AdamW steps on the same batch, from the original weights
  final.<hf name>       F64, every parameter after the 3 steps
Each step: loss -> backward -> clip_grad_norm_(max_norm=1) (coef = max_norm / (norm + 1e-6),
applied when < 1) -> torch.optim.AdamW (betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on 2-D
parameters only, bias-corrected), checked against an explicit implementation.

And tests/data/train/scale_grad_qwen3.safetensors (1-bit scale distillation on qwen3_gqa2_tied):
per block linear W (q/k/v/o/gate/up/down proj of every layer) a ±1 sign matrix S (`sign.<name>`
I8) and per-row scales a (`scale.<name>` F64 [rows]); the student uses W + a[:, None] * S, the
embedding and norms stay at the base. `tokens` is the same batch as in qwen3_gqa2_tied.safetensors;
`teacher` F64 [B, S, V] is the base model's logits on `tokens` plus small noise.
  mse_loss F64 [1], scale_grad.<name>     mean over B*S*V of (student - teacher)^2 and d/d a
  kl_loss  F64 [1], kl_scale_grad.<name>  mean over the B*S positions of
                                          KL(softmax(teacher) || softmax(student)) and d/d a

Run from the repository root with Debian's python3-torch:
    /usr/bin/python3 tools/gen_train_fixtures.py
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_model_fixtures import forward  # noqa: E402  (the reference transformer)

MODELS = "tests/data/model"
OUT = "tests/data/train"
TRAIN_MODELS = ["qwen3_gqa2_tied", "llama_gqa4_untied", "qwen2_mha_bias"]
SCALE_MODEL = "qwen3_gqa2_tied"
B, S = 2, 7
NUM_MASKED = 3
LRS = [1e-2, 5e-3, 2.5e-3]
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_NORM = 1.0
TEACHER_NOISE = 0.05
BLOCK_LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

DTYPES = {"F64": (np.float64, torch.float64), "F32": (np.float32, torch.float32),
          "I32": (np.int32, torch.int32), "I8": (np.int8, torch.int8)}


def write_safetensors(path, tensors, metadata):
    """tensors: name -> (dtype, tensor), written in this order; metadata: str -> str."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, (dtype, t) in tensors.items():
        raw = t.detach().to(DTYPES[dtype][1]).contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    """Returns ({name: tensor}, metadata); tensors keep their file dtype."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=DTYPES[info["dtype"]][0])
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out, meta


def load_model(name):
    with open(os.path.join(MODELS, name, "config.json")) as f:
        cfg = json.load(f)
    tensors, _ = read_safetensors(os.path.join(MODELS, name, "model.safetensors"))
    return cfg, {k: v.to(torch.float64) for k, v in tensors.items()}


def batch_logits(cfg, w, tokens):
    """[B, S, V]: each row is an independent sequence (the reference forward takes one)."""
    return torch.stack([forward(cfg, w, row.tolist()) for row in tokens])


def make_batch(cfg, gen):
    seq = torch.randint(0, cfg["vocab_size"], (B, S + 1), generator=gen)
    tokens, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
    masked = torch.randperm(B * S, generator=gen)[:NUM_MASKED]
    targets.view(-1)[masked] = -1
    return tokens, targets


def ce_loss(cfg, w, tokens, targets):
    logits = batch_logits(cfg, w, tokens)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab_size"]),
                                             targets.reshape(-1).long(), ignore_index=-1,
                                             reduction="mean")


def explicit_adamw_step(params, state, grads, lr, step):
    """What torch.optim.AdamW does (PyTorch 1.13, foreach=False), written out."""
    b1, b2 = BETAS
    out = {}
    for k, p in params.items():
        g = grads[k]
        m, v = state[k]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[k] = (m, v)
        wd = WEIGHT_DECAY if p.dim() == 2 else 0.0
        p = p * (1 - lr * wd)
        denom = v.sqrt() / math.sqrt(1 - b2 ** step) + EPS
        out[k] = p - (lr / (1 - b1 ** step)) * m / denom
    return out


def train_fixture(name, seed):
    cfg, base = load_model(name)
    gen = torch.Generator().manual_seed(seed)
    tokens, targets = make_batch(cfg, gen)

    params = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    loss = ce_loss(cfg, params, tokens, targets)
    grads = torch.autograd.grad(loss, list(params.values()))
    grads = dict(zip(params.keys(), grads))
    # Finite-difference spot checks: the embedding (both uses when tied) and the final norm.
    for k, idx in (("model.embed_tokens.weight", (int(tokens[0, 1]), 5)), ("model.norm.weight", (2,))):
        h = 1e-6
        with torch.no_grad():
            plus, minus = dict(base), dict(base)
            plus[k], minus[k] = base[k].clone(), base[k].clone()
            plus[k][idx] += h
            minus[k][idx] -= h
            fd = (ce_loss(cfg, plus, tokens, targets) - ce_loss(cfg, minus, tokens, targets)).item() / (2 * h)
        assert math.isclose(fd, grads[k][idx].item(), rel_tol=1e-5, abs_tol=1e-9), (k, fd, grads[k][idx])

    # AdamW with torch's optimizer, two param groups: decay 2-D, no decay 1-D.
    decay = [p for p in params.values() if p.dim() == 2]
    no_decay = [p for p in params.values() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LRS[0], betas=BETAS, eps=EPS, foreach=False)
    ref = {k: v.clone() for k, v in base.items()}  # the explicit implementation's parameters
    ref_state = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in base.items()}
    losses, norms = [], []
    for step, lr in enumerate(LRS, start=1):
        opt.zero_grad(set_to_none=True)
        step_loss = ce_loss(cfg, params, tokens, targets)
        step_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_NORM)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        losses.append(step_loss.item())
        norms.append(norm.item())

        # Explicit: same loss, clip, AdamW.
        rp = {k: v.clone().requires_grad_(True) for k, v in ref.items()}
        rl = ce_loss(cfg, rp, tokens, targets)
        rg = dict(zip(rp.keys(), torch.autograd.grad(rl, list(rp.values()))))
        total = math.sqrt(sum(float((g * g).sum()) for g in rg.values()))
        coef = MAX_NORM / (total + 1e-6)
        if coef < 1:
            rg = {k: g * coef for k, g in rg.items()}
        ref = explicit_adamw_step(ref, ref_state, rg, lr, step)
        assert math.isclose(rl.item(), losses[-1], rel_tol=1e-12), (rl.item(), losses[-1])
        assert math.isclose(total, norms[-1], rel_tol=1e-12), (total, norms[-1])
    for k, p in params.items():
        assert torch.allclose(p.detach(), ref[k], rtol=1e-12, atol=1e-14), k
    assert losses[0] == loss.item()

    tensors = {"tokens": ("I32", tokens), "targets": ("I32", targets),
               "loss": ("F64", loss.detach().reshape(1))}
    tensors.update({f"grad.{k}": ("F64", g) for k, g in grads.items()})
    tensors["adam.losses"] = ("F64", torch.tensor(losses, dtype=torch.float64))
    tensors["adam.lrs"] = ("F64", torch.tensor(LRS, dtype=torch.float64))
    tensors["adam.grad_norms"] = ("F64", torch.tensor(norms, dtype=torch.float64))
    tensors.update({f"final.{k}": ("F64", p.detach()) for k, p in params.items()})
    meta = {
        "generator": "tools/gen_train_fixtures.py", "torch": torch.__version__,
        "model": name, "model_folder": f"{MODELS}/{name}",
        "loss": "mean cross-entropy over targets != -1 (full-vocab logits, float64)",
        "betas": json.dumps(list(BETAS)), "eps": repr(EPS), "weight_decay": repr(WEIGHT_DECAY),
        "max_norm": repr(MAX_NORM),
        "clip": "total = sqrt(sum of squared grads); coef = max_norm / (total + 1e-6); "
                "grads *= coef if coef < 1 (adam.grad_norms is total, before clipping)",
        "decay": "decoupled weight decay (p *= 1 - lr * weight_decay) only on 2-D parameters "
                 "(linear weights, embed_tokens, lm_head); none on 1-D (norms, biases)",
        "adamw": "m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; "
                 "p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), t = 1, 2, 3",
    }
    path = os.path.join(OUT, f"{name}.safetensors")
    write_safetensors(path, tensors, meta)
    return path, tokens


def scale_fixture(name, tokens, seed):
    """tokens: the same batch as the training fixture of this model (no masking here)."""
    cfg, base = load_model(name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        teacher = batch_logits(cfg, base, tokens)
    teacher = teacher + TEACHER_NOISE * torch.randn(teacher.shape, generator=gen,
                                                    dtype=torch.float64)
    signs, scales = {}, {}
    for l in range(cfg["num_hidden_layers"]):
        for lin in BLOCK_LINEARS:
            k = f"model.layers.{l}.{lin}.weight"
            rows, cols = base[k].shape
            signs[k] = torch.where(torch.rand(rows, cols, generator=gen) < 0.5, -1, 1).to(torch.int8)
            scales[k] = 1e-2 * (0.5 + torch.rand(rows, generator=gen, dtype=torch.float64))

    def student_logits(a):
        w = dict(base)
        for k in signs:
            w[k] = base[k] + a[k][:, None] * signs[k].to(torch.float64)
        return batch_logits(cfg, w, tokens)

    def mse(logits):
        return ((logits - teacher) ** 2).mean()

    def kl(logits):
        lt = teacher.log_softmax(-1)
        return (lt.exp() * (lt - logits.log_softmax(-1))).sum(-1).mean()

    results = {}
    for tag, fn in (("mse", mse), ("kl", kl)):
        a = {k: v.clone().requires_grad_(True) for k, v in scales.items()}
        loss = fn(student_logits(a))
        g = dict(zip(a.keys(), torch.autograd.grad(loss, list(a.values()))))
        results[tag] = (loss.detach(), g)
        # A finite-difference spot check of one scale per loss.
        k = next(iter(scales))
        h = 1e-6
        with torch.no_grad():
            plus = {kk: v.clone() for kk, v in scales.items()}
            minus = {kk: v.clone() for kk, v in scales.items()}
            plus[k][3] += h
            minus[k][3] -= h
            fd = (fn(student_logits(plus)) - fn(student_logits(minus))).item() / (2 * h)
        assert math.isclose(fd, g[k][3].item(), rel_tol=1e-5, abs_tol=1e-10), (tag, fd, g[k][3])

    tensors = {"tokens": ("I32", tokens), "teacher": ("F64", teacher)}
    tensors.update({f"sign.{k}": ("I8", s) for k, s in signs.items()})
    tensors.update({f"scale.{k}": ("F64", a) for k, a in scales.items()})
    tensors["mse_loss"] = ("F64", results["mse"][0].reshape(1))
    tensors.update({f"scale_grad.{k}": ("F64", g) for k, g in results["mse"][1].items()})
    tensors["kl_loss"] = ("F64", results["kl"][0].reshape(1))
    tensors.update({f"kl_scale_grad.{k}": ("F64", g) for k, g in results["kl"][1].items()})
    meta = {
        "generator": "tools/gen_train_fixtures.py", "torch": torch.__version__,
        "model": name, "model_folder": f"{MODELS}/{name}",
        "student": "block linear weights W + scale[:, None] * sign (per-row scales); "
                   "embedding and norms at the base",
        "teacher": f"base-model logits + {TEACHER_NOISE} * N(0, 1) noise",
        "mse_loss": "mean over all B*S*V entries of (student - teacher)^2",
        "kl_loss": "mean over the B*S positions of KL(softmax(teacher) || softmax(student))",
        "masking": "none (every position counts)",
    }
    path = os.path.join(OUT, f"scale_grad_{'qwen3' if name.startswith('qwen3') else name}.safetensors")
    write_safetensors(path, tensors, meta)
    return path


def summarize(path):
    tensors, meta = read_safetensors(path)
    size = os.path.getsize(path)
    print(f"{path}: {size} bytes, {len(tensors)} tensors, model {meta['model']}")
    for k in ("loss", "adam.losses", "adam.grad_norms", "mse_loss", "kl_loss"):
        if k in tensors:
            print(f"  {k} = {tensors[k].tolist()}")
    grads = [v for k, v in tensors.items() if k.startswith("grad.")]
    if grads:
        print(f"  {len(grads)} grad.* tensors, global norm {math.sqrt(sum(float((g * g).sum()) for g in grads)):.6f}")
    if "targets" in tensors:
        print(f"  targets masked: {int((tensors['targets'] < 0).sum())} of {tensors['targets'].numel()}")
    assert size < 1 << 20, path


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)  # nothing draws from the global generator; set for good measure
    paths, tokens = [], {}
    for i, name in enumerate(TRAIN_MODELS):
        path, tokens[name] = train_fixture(name, 2000 + i)
        paths.append(path)
    paths.append(scale_fixture(SCALE_MODEL, tokens[SCALE_MODEL], 3000))
    for p in paths:
        summarize(p)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference logits for the transformer, from an independent PyTorch implementation.

For small random models of every family, with awkward shapes (head_dim != hidden/heads, GQA
ratios 1, 2 and 4, odd intermediate sizes, tied and untied embeddings, q/k/v biases, q/k norms,
llama3 rope scaling, BF16 weights), writes a Hugging Face folder (config.json + model.safetensors)
and `expected.safetensors` holding the prompt ids and the logits [T, vocab] computed in float64.
For BF16 models it also holds `logits_bf16_activations`: the same forward with every linear
layer's input rounded to BF16 first (F32 then BF16, to nearest even), which is what the engine's
BF16 dot-product path computes on CPUs with AVX512_BF16 (src/ops/matmul.h).
The C++ tests (tests/model/reference_test.cc) compare against these, so CI needs no PyTorch.

Run from the repository root with Debian's python3-torch:
    /usr/bin/python3 tools/gen_model_fixtures.py
"""
import json
import math
import os
import struct

import torch

OUT = "tests/data/model"

CONFIGS = {
    # name: (config overrides, weight dtype)
    "qwen3_gqa2_tied": (dict(model_type="qwen3", hidden_size=48, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, intermediate_size=37,
                             num_hidden_layers=2, vocab_size=97, tie_word_embeddings=True,
                             rope_theta=1000000.0, rms_norm_eps=1e-6), "F32"),
    "qwen3_gqa2_bf16": (dict(model_type="qwen3", hidden_size=48, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, intermediate_size=37,
                             num_hidden_layers=2, vocab_size=97, tie_word_embeddings=True,
                             rope_theta=1000000.0, rms_norm_eps=1e-6), "BF16"),
    "llama_gqa4_untied": (dict(model_type="llama", hidden_size=64, num_attention_heads=8,
                               num_key_value_heads=2, intermediate_size=45, num_hidden_layers=2,
                               vocab_size=101, tie_word_embeddings=False, rope_theta=10000.0,
                               rms_norm_eps=1e-5), "F32"),
    "llama3_rope_scaling": (dict(model_type="llama", hidden_size=32, num_attention_heads=2,
                                 num_key_value_heads=1, head_dim=16, intermediate_size=33,
                                 num_hidden_layers=2, vocab_size=64, tie_word_embeddings=True,
                                 rope_theta=500000.0, rms_norm_eps=1e-5,
                                 rope_scaling=dict(rope_type="llama3", factor=8.0,
                                                   low_freq_factor=1.0, high_freq_factor=4.0,
                                                   original_max_position_embeddings=16)), "F32"),
    "qwen2_mha_bias": (dict(model_type="qwen2", hidden_size=40, num_attention_heads=5,
                            num_key_value_heads=5, intermediate_size=51, num_hidden_layers=2,
                            vocab_size=89, tie_word_embeddings=False, rope_theta=1000000.0,
                            rms_norm_eps=1e-6), "F32"),
    "mistral_gqa2_f16": (dict(model_type="mistral", hidden_size=32, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=29, num_hidden_layers=3,
                              vocab_size=77, tie_word_embeddings=False, rope_theta=10000.0,
                              rms_norm_eps=1e-5), "F16"),
}
PROMPT_LEN = 11


def write_safetensors(path, tensors, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name, (dtype, t) in tensors.items():
        if dtype == "F32":
            raw = t.to(torch.float32).contiguous().numpy().tobytes()
        elif dtype == "F16":
            raw = t.to(torch.float16).contiguous().numpy().tobytes()
        elif dtype == "BF16":
            raw = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
        elif dtype == "I32":
            raw = t.to(torch.int32).contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def rounded(t, dtype):
    """The values the file will really hold."""
    if dtype == "BF16":
        return t.to(torch.bfloat16).to(torch.float64)
    if dtype == "F16":
        return t.to(torch.float16).to(torch.float64)
    return t.to(torch.float32).to(torch.float64)


def make_weights(cfg, gen):
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim", h // heads)
    bias = cfg["model_type"] == "qwen2"
    qk_norm = cfg["model_type"] == "qwen3"

    def rand(*shape, scale=None):
        scale = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)

    w = {"model.embed_tokens.weight": rand(v, h, scale=1.0)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = rand(heads * d, h)
        w[p + "self_attn.k_proj.weight"] = rand(kv * d, h)
        w[p + "self_attn.v_proj.weight"] = rand(kv * d, h)
        if bias:
            w[p + "self_attn.q_proj.bias"] = rand(heads * d, scale=0.1)
            w[p + "self_attn.k_proj.bias"] = rand(kv * d, scale=0.1)
            w[p + "self_attn.v_proj.bias"] = rand(kv * d, scale=0.1)
        if qk_norm:
            w[p + "self_attn.q_norm.weight"] = norm(d)
            w[p + "self_attn.k_norm.weight"] = norm(d)
        w[p + "self_attn.o_proj.weight"] = rand(h, heads * d)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "mlp.gate_proj.weight"] = rand(f, h)
        w[p + "mlp.up_proj.weight"] = rand(f, h)
        w[p + "mlp.down_proj.weight"] = rand(h, f)
    w["model.norm.weight"] = norm(h)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rand(v, h)
    return w


def inverse_frequencies(cfg, d):
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    s = cfg.get("rope_scaling")
    if s and s["rope_type"] == "llama3":
        old = s["original_max_position_embeddings"]
        low_wavelen = old / s["low_freq_factor"]
        high_wavelen = old / s["high_freq_factor"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / s["factor"], inv)
        smooth = (old / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / s["factor"] + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def forward(cfg, w, ids, bf16_inputs=False):
    h, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim", h // heads)
    eps = cfg["rms_norm_eps"]
    t = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    # Angles in float32, as transformers computes them; cos/sin then in float64.
    inv = inverse_frequencies(cfg, d).to(torch.float32)
    ang = (torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]).to(torch.float64)
    cos = torch.cat((ang.cos(), ang.cos()), -1)[:, None, :]
    sin = torch.cat((ang.sin(), ang.sin()), -1)[:, None, :]
    mask = torch.full((t, t), float("-inf"), dtype=torch.float64).triu(1)

    def mm(inp, weight):
        if bf16_inputs:
            inp = inp.to(torch.float32).to(torch.bfloat16).to(torch.float64)
        return inp @ weight.T

    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = rms_norm(x, w[p + "input_layernorm.weight"], eps)

        def lin(name, inp):
            y = mm(inp, w[p + name + ".weight"])
            if (p + name + ".bias") in w:
                y = y + w[p + name + ".bias"]
            return y

        q = lin("self_attn.q_proj", a).view(t, heads, d)
        k = lin("self_attn.k_proj", a).view(t, kv, d)
        v = lin("self_attn.v_proj", a).view(t, kv, d)
        if (p + "self_attn.q_norm.weight") in w:
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(d) + mask
        out = torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(t, heads * d)
        x = x + mm(out, w[p + "self_attn.o_proj.weight"])
        m = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = mm(m, w[p + "mlp.gate_proj.weight"])
        up = mm(m, w[p + "mlp.up_proj.weight"])
        x = x + mm(torch.nn.functional.silu(gate) * up, w[p + "mlp.down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return mm(x, head)


def main():
    for i, (name, (overrides, dtype)) in enumerate(sorted(CONFIGS.items())):
        gen = torch.Generator().manual_seed(1000 + i)
        cfg = dict(hidden_act="silu", max_position_embeddings=64, rope_scaling=None)
        cfg.update(overrides)
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        weights = {k: rounded(v, dtype) for k, v in make_weights(cfg, gen).items()}
        # Norms and biases stay F32 in the file (as many real checkpoints do for norms).
        write_safetensors(os.path.join(folder, "model.safetensors"),
                          {k: (dtype if v.dim() == 2 else "F32", v) for k, v in weights.items()},
                          {"format": "pt"})
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        ids = torch.randint(0, cfg["vocab_size"], (PROMPT_LEN,), generator=gen).tolist()
        logits = forward(cfg, weights, ids)
        expected = {"ids": ("I32", torch.tensor(ids)), "logits": ("F32", logits)}
        if dtype == "BF16":
            expected["logits_bf16_activations"] = ("F32", forward(cfg, weights, ids, True))
        write_safetensors(os.path.join(folder, "expected.safetensors"), expected,
                          {"generator": "tools/gen_model_fixtures.py", "torch": torch.__version__})
        print(f"{name}: {sum(v.numel() for v in weights.values())} parameters, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()

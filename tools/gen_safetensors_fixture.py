#!/usr/bin/env python3
"""Writes tests/data/io/reference.safetensors straight from the safetensors format description
(u64 little-endian header length, JSON header, data), independently of the project's writer,
so the reader is checked against the format rather than against itself.

Run from the repository root:  /usr/bin/python3 tools/gen_safetensors_fixture.py
"""
import json
import struct

tensors = []  # (name, dtype, shape, bytes)
f32 = [1.5, -2.25, 3.0e-3, 1.0e30, -0.0, 7.0]
tensors.append(("a.f32", "F32", [2, 3], struct.pack("<6f", *f32)))
f16 = [1.0, -2.5, 65504.0, 6.103515625e-05, 5.960464477539063e-08]  # incl. max and subnormal
tensors.append(("b.f16", "F16", [5], struct.pack("<5e", *f16)))
# BF16 = the top 16 bits of the F32 pattern; these values are exact in BF16.
bf16 = [1.0, -3.5, 0.15625, 256.0]
tensors.append(("c.bf16", "BF16", [2, 2],
                b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in bf16)))
tensors.append(("d.u8", "U8", [4], bytes([0, 1, 128, 255])))
tensors.append(("e.i8", "I8", [3], struct.pack("<3b", -128, 0, 127)))
tensors.append(("f.empty", "F32", [0, 4], b""))

header = {"__metadata__": {"format": "pt", "note": "reference fixture"}}
data = b""
for name, dtype, shape, raw in tensors:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
text = json.dumps(header).encode()
text += b" " * ((8 - len(text) % 8) % 8)
with open("tests/data/io/reference.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)

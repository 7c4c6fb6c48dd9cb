#!/usr/bin/env python3
"""Writes the seed corpus of the safetensors fuzz target (tests/fuzz/corpus/)
with the reference writer (python safetensors + torch). Deterministic, a few
hundred bytes per file. The unit test test_formats_safetensors also reads
small.safetensors and checks its values against the formulas used here.

    python3 tests/fuzz/make_corpus.py
"""
import pathlib
import struct

import torch
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent / "corpus"


def main():
    OUT.mkdir(exist_ok=True)
    # small.safetensors: values the unit test recomputes independently.
    save_file(
        {
            "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),  # a[i] = i
            "b": torch.tensor([1.5, -2.0, 0.25], dtype=torch.float16),
            "c": torch.tensor([1.0, -0.5, 3.0], dtype=torch.bfloat16),
            "scalar": torch.tensor(7, dtype=torch.int64),  # rank 0
            "empty": torch.zeros((0, 3), dtype=torch.float32),
        },
        str(OUT / "small.safetensors"),
        metadata={"format": "pt"},
    )
    save_file({}, str(OUT / "empty.safetensors"))
    dtypes = {
        "bool": torch.bool, "u8": torch.uint8, "i8": torch.int8,
        "f8_e5m2": torch.float8_e5m2, "f8_e4m3": torch.float8_e4m3fn,
        "i16": torch.int16, "u16": torch.uint16, "f16": torch.float16,
        "bf16": torch.bfloat16, "i32": torch.int32, "u32": torch.uint32,
        "f32": torch.float32, "f64": torch.float64, "i64": torch.int64,
        "u64": torch.uint64,
    }
    save_file({k: torch.ones(2, dtype=v) for k, v in dtypes.items()},
              str(OUT / "all_dtypes.safetensors"))
    unet = {
        "conv_in.weight": torch.arange(4 * 2 * 3 * 3, dtype=torch.float16).reshape(4, 2, 3, 3),
        "conv_in.bias": torch.zeros(4, dtype=torch.float16),
        "down_blocks.0.resnets.0.norm1.weight": torch.ones(4, dtype=torch.float16),
        "time_embedding.linear_1.weight": torch.full((8, 4), 0.5, dtype=torch.float16),
    }
    save_file(unet, str(OUT / "unet_like.safetensors"), metadata={"soupd": "seed"})

    # Hand-made near misses (raw bytes, the reference writer refuses them):
    # numel overflow (sd.cpp #1876) and a rank-8 tensor, for the fuzzer to mutate.
    raw(OUT / "overflow.safetensors",
        '{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}', b"")
    raw(OUT / "rank8.safetensors",
        '{"w":{"dtype":"F16","shape":[1,1,1,1,1,1,1,2],"data_offsets":[0,4]}}', b"\0\x3c\0\xc0")


def raw(path, header, data):
    h = header.encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


if __name__ == "__main__":
    main()

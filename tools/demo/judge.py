"""The demo's judge: a small CNN that reads a 64x64 image and reports its
shape, colour, style and background. Trained by make_demo.py (torch); read
here with numpy alone, so the tests and evaluate.py need no torch.

Architecture (both implementations): four 3x3 convolutions (padding 1) with
ReLU, a 2x2 max pool after each of the first three, a global max pool, then
one linear layer whose outputs are the four heads' logits. (With average
pools the shape head stayed near chance: 0.61 on test images against 1.00
with max pools, in one run of 1200 steps each.)
"""
import json
import struct

import numpy as np

from shapes import BACKGROUNDS, COLOURS, SHAPES, STYLES

HEADS = [("shape", SHAPES), ("colour", list(COLOURS)), ("style", STYLES),
         ("background", list(BACKGROUNDS))]
CHANNELS = [3, 16, 32, 48, 64]


def read_safetensors(path):
    """name -> float32 array, for F32/F16 safetensors files."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        dt = {"F32": np.float32, "F16": np.float16}[v["dtype"]]
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(blob[a:b], dt).reshape(v["shape"]).astype(np.float32)
    return out


def _conv3x3(x, w, b):
    """x [N, C, H, W], w [O, C, 3, 3] -> [N, O, H, W], zero padding 1."""
    n, c, h, wd = x.shape
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([p[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=2)
    cols = cols.reshape(n, c * 9, h * wd)  # (c, ki) order matches w.reshape(O, C*9)
    y = np.einsum("ok,nkp->nop", w.reshape(w.shape[0], -1), cols, optimize=True)
    return y.reshape(n, -1, h, wd) + b[None, :, None, None]


def _pool2(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


class Judge:
    def __init__(self, path):
        self.w = read_safetensors(path)

    def logits(self, images):
        """images: uint8 [N, 64, 64, 3] -> [N, sum of head sizes]."""
        x = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1
        for i in range(4):
            x = np.maximum(_conv3x3(x, self.w[f"conv{i}.weight"], self.w[f"conv{i}.bias"]), 0)
            if i < 3:
                x = _pool2(x)
        x = x.max(axis=(2, 3))
        return x @ self.w["head.weight"].T + self.w["head.bias"]

    def predict(self, images):
        """list of {"shape", "colour", "style", "background"} per image."""
        z = self.logits(np.asarray(images))
        out = [dict() for _ in range(len(z))]
        o = 0
        for name, labels in HEADS:
            k = np.argmax(z[:, o:o + len(labels)], axis=1)
            for r, i in zip(out, k):
                r[name] = labels[i]
            o += len(labels)
        return out


def score(pred, want, keys=("shape", "colour", "style")):
    """1 when the image shows every asked attribute, else 0."""
    return float(all(pred[k] == want[k] for k in keys))

"""The README quick start's pictures, drawn by the real daemon over HTTP.

    python3 tools/demo/pictures.py [--bin build/soupd] [--out tools/demo/images]

One request (PROMPT, seeds 1..4) three times: on the base; with the triangle
shard registered; with it withdrawn. Each PNG is a strip
of the four 64x64 images, scaled 2x.
"""
import argparse
import os
import pathlib
import signal
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from evaluate import DEMO, ROOT, start_daemon  # noqa: E402

PROMPT = "a large yellow plain triangle on a gray background"
SEEDS = 4


def strip(imgs, path):
    row = np.concatenate(imgs, axis=1)
    Image.fromarray(row).resize((row.shape[1] * 2, row.shape[0] * 2), Image.NEAREST).save(path)
    print(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "build" / "soupd"))
    ap.add_argument("--out", default=str(HERE / "images"))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="soupd-pictures-")
    proc, api = start_daemon(args.bin, pathlib.Path(tmp) / "data")
    try:
        strip(api.generate(PROMPT, 1, n=SEEDS)[0], out / "1-base.png")
        i = api.register(DEMO / "shards" / "triangle.safetensors", "triangle")
        strip(api.generate(PROMPT, 1, n=SEEDS)[0], out / "2-triangle.png")
        api.withdraw(i)
        strip(api.generate(PROMPT, 1, n=SEEDS)[0], out / "3-withdrawn.png")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    os.system(f"rm -rf {tmp}")


if __name__ == "__main__":
    main()

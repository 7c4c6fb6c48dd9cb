"""The paper's tables in miniature, measured on the real daemon over HTTP.

    python3 tools/demo/evaluate.py [--bin build/soupd] [--prompts 8] [--seeds 4]
                                   [--out tools/demo/RESULTS.md] [--demo deploy/demo]

Starts soupd on the demo base (deploy/demo/model) with a fresh data
directory, then registers, withdraws and generates through the API: the base;
each shard alone; the soup of the two style shards; the uniform soup of all
shards; the combined paragon;
leave-one-out unlearning (each shard withdrawn from the full soup in turn).
Every image is scored by the judge: 1 when it shows the shape, colour and
style its prompt asked for. The prompts of a domain are its held-out caption combinations
(never seen in training) and an even spread of its other combinations.
"""
import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import shapes  # noqa: E402
from judge import Judge, score  # noqa: E402
from soup_client import GUIDANCE, STEPS, Soupd  # noqa: E402

DEMO = ROOT / "deploy" / "demo"


def prompt_set(n_prompts):
    """domain -> n distinct (caption, attributes): the held-out test
    combinations first (never seen in training), then an even spread of the
    domain's other combinations."""
    out = {}
    for dom in shapes.DOMAINS:
        cs = shapes.combos(dom)
        held = [a for a in cs if shapes.is_test_combo(a)]
        rest = [a for a in cs if not shapes.is_test_combo(a)]
        k = max(0, n_prompts - len(held))
        pick = held[:n_prompts] + [rest[(i * len(rest)) // max(k, 1)] for i in range(k)]
        out[dom] = [(shapes.caption(a), a) for a in pick]
    return out


def evaluate(api, judge, prompts, seeds, seed0=1000):
    """domain -> mean score over prompts x seeds, and the number of images."""
    row, n = {}, 0
    for dom, ps in prompts.items():
        s = []
        for cap, a in ps:
            imgs, _ = api.generate(cap, seed0, n=seeds)
            s += [score(p, a) for p in judge.predict(np.stack(imgs))]
        row[dom] = float(np.mean(s))
        n = len(s)
    return row, n


def start_daemon(binary, data_dir, demo=DEMO):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(pathlib.Path(data_dir).parent / "soupd.log", "ab")
    proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
                             "--model", str(demo / "model")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"soupd exited with {proc.returncode}; see {log.name}")
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    token = (pathlib.Path(data_dir) / "admin.token").read_text().strip()
    return proc, Soupd(url, token)


def table(rows, n):
    doms = list(shapes.DOMAINS)
    head = "| model | " + " | ".join(doms) + " | shard domains (mean) |"
    lines = [head, "|" + "---|" * (len(doms) + 2)]
    for name, r in rows:
        mean = np.mean([r[d] for d in shapes.SHARDS])
        lines.append(f"| {name} | " + " | ".join(f"{r[d]:.2f}" for d in doms) + f" | {mean:.2f} |")
    return "\n".join(lines) + f"\n\n{n} images a cell (prompts x seeds).\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "build" / "soupd"))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--demo", default=str(DEMO), help="the folder make_demo.py wrote")
    args = ap.parse_args()
    demo = pathlib.Path(args.demo)
    judge = Judge(demo / "judge.safetensors")
    prompts = prompt_set(args.prompts)
    tmp = tempfile.mkdtemp(prefix="soupd-demo-")
    proc, api = start_daemon(args.bin, pathlib.Path(tmp) / "data", demo)
    rows, t0 = [], time.time()

    def run(name):
        r, n = evaluate(api, judge, prompts, args.seeds)
        rows.append((name, r))
        print(f"{name:28s} " + " ".join(f"{d} {v:.2f}" for d, v in r.items()) +
              f"   ({n} images a cell, {time.time() - t0:.0f} s)", flush=True)
        return n

    try:
        n = run("base (no shard)")
        shard = {d: demo / "shards" / f"{d}.safetensors" for d in shapes.SHARDS}
        for d in shapes.SHARDS:
            i = api.register(shard[d], d)
            run(f"{d} shard alone")
            api.withdraw(i)
        styles = [api.register(shard[d], d) for d in ("striped", "dotted")]
        run("soup of striped + dotted")
        for i in styles:
            api.withdraw(i)
        ids = {d: api.register(shard[d], d) for d in shapes.SHARDS}
        run("uniform soup (all 4)")
        for d in shapes.SHARDS:
            api.withdraw(ids[d])
            run(f"soup without {d}")
            ids[d] = api.register(shard[d], d)
        for d in shapes.SHARDS:
            api.withdraw(ids[d])
        api.register(demo / "paragon.safetensors", "paragon")
        run("combined paragon")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    md = ("# The demo soup, measured\n\nWritten by `python3 tools/demo/evaluate.py` "
          f"(soupd over HTTP, DDIM {STEPS} steps, guidance {GUIDANCE}, 64x64). A cell is the "
          "fraction of images the judge reads as showing the prompt's shape, colour and style; "
          "the prompts of a domain are its held-out caption combinations and an even spread of its others.\n\n" + table(rows, n))
    pathlib.Path(args.out).write_text(md)
    print(md)
    os.system(f"rm -rf {tmp}")


if __name__ == "__main__":
    main()

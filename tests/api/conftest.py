"""Shared fixtures for the API tests: the real soupd binary on a loopback
port with a temporary data directory, real HTTP (requests), real safetensors
files built from the shipped tiny base model.

Environment (set by ctest): SOUPD_BIN, SOUPD_SOURCE_DIR.
"""
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess
import time

import numpy as np
import pytest
import requests

SRC = pathlib.Path(os.environ.get("SOUPD_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BIN = os.environ.get("SOUPD_BIN", str(SRC / "build" / "soupd"))
MODEL = SRC / "tests" / "fixtures" / "tiny-sd2"
BASE_UNET = MODEL / "unet" / "diffusion_pytorch_model.safetensors"

NP_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32,
             "I64": np.int64, "U8": np.uint8}


# ---- safetensors, written by hand (the format is the thing under test) ----

def st_read(path):
    """Returns ({name: ndarray}, metadata) from a safetensors file."""
    b = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    meta = header.pop("__metadata__", None)
    data = b[8 + n:]
    out = {}
    for name, t in header.items():
        s, e = t["data_offsets"]
        dt = NP_DTYPES[t["dtype"]] if t["dtype"] != "BF16" else None
        if dt is None:
            u = np.frombuffer(data[s:e], dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(data[s:e], dtype=dt)
        out[name] = arr.reshape(t["shape"])
    return out, meta


def st_bytes(tensors, metadata=None, dtype_name=None):
    """Serializes {name: ndarray} (sorted by name) as safetensors bytes."""
    header, blobs, off = {}, [], 0
    rev = {v: k for k, v in NP_DTYPES.items()}
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.tobytes()
        header[name] = {"dtype": dtype_name or rev[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def base_tensors():
    return st_read(BASE_UNET)[0]


def make_shard(seed, scale=0.01, dtype=np.float16):
    """A fine-tuned-looking shard: base + small seeded noise, as F16 by default."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, w in base_tensors().items():
        w = w.astype(np.float64)
        mag = np.abs(w).max() if w.size else 0.0
        noise = rng.standard_normal(w.shape) * scale * (mag if mag > 0 else 1.0)
        out[name] = (w + noise).astype(dtype)
    return out


# ---- the daemon ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, data_dir, extra=(), env=None, model=MODEL):
        self.data_dir = pathlib.Path(data_dir)
        self.model = pathlib.Path(model)
        self.extra = list(extra)
        self.env = env or {}
        self.proc = None
        self.port = None
        self.log_path = self.data_dir.parent / (self.data_dir.name + ".log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait=True):
        self.port = free_port()
        env = dict(os.environ)
        env.update(self.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
             "--model", str(self.model), *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"soupd exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("soupd did not become ready:\n" + self.logs())

    def logs(self):
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def admin_token(self):
        return (self.data_dir / "admin.token").read_text().strip()

    def token(self, role, provider=None):
        cmd = [BIN, "token", "create", "--data-dir", str(self.data_dir), "--role", role]
        if provider:
            cmd += ["--provider", provider]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        return self.stop(signal.SIGKILL)


class Client:
    """requests with a bearer token and the daemon's base URL."""

    def __init__(self, daemon, token):
        self.d, self.token = daemon, token

    def _h(self, headers=None):
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(headers or {})
        return h

    def get(self, path, **kw):
        return requests.get(self.d.url + path, headers=self._h(kw.pop("headers", None)),
                            timeout=120, **kw)

    def post(self, path, **kw):
        return requests.post(self.d.url + path, headers=self._h(kw.pop("headers", None)),
                             timeout=300, **kw)

    def patch(self, path, **kw):
        return requests.patch(self.d.url + path, headers=self._h(kw.pop("headers", None)),
                              timeout=300, **kw)

    def upload(self, data, name, weight=None, **params):
        q = {"name": name, **params}
        if weight is not None:
            q["weight"] = str(weight)
        return self.post("/shards", params=q, data=data,
                         headers={"Content-Type": "application/octet-stream"})

    def soup(self):
        r = self.get("/soup")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "data").start()
    yield d
    d.stop()


@pytest.fixture
def admin(daemon):
    return Client(daemon, daemon.admin_token())


def assert_problem(r, status):
    """An RFC 9457 problem with the given status, no server path in it."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    p = r.json()
    for k in ("type", "title", "status", "detail"):
        assert k in p, p
    assert p["status"] == status
    assert "/tmp/" not in r.text and str(SRC) not in r.text, r.text
    assert r.headers.get("X-Request-Id")
    return p


def store_files(daemon):
    return sorted(p.name for p in (daemon.data_dir / "shards").iterdir())

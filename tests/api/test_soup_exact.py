"""The exact soup over real HTTP (DESIGN.md 5; reliability.md items 5, 8):
withdrawal is bit-exact unlearning, order does not matter, reweighting is
reversible, the exported soup is within the stated bound of an fp64
reference, and a kill -9 after an answered withdrawal loses nothing."""
import math

import numpy as np
import pytest

from conftest import Client, Daemon, base_tensors, make_shard, st_bytes, st_read

WEIGHTS = {"A": 1.0, "B": 2.5, "C": 0.75}


@pytest.fixture(scope="module")
def shards():
    return {k: make_shard(10 + i) for i, k in enumerate("ABC")}


def fresh(tmp_path, name):
    d = Daemon(tmp_path / name).start()
    return d, Client(d, d.admin_token())


def register(c, shards, names):
    ids = {}
    for n in names:
        r = c.upload(st_bytes(shards[n]), n, weight=WEIGHTS[n])
        assert r.status_code == 201, r.text
        ids[n] = r.json()["shard"]["id"]
    return ids


def test_withdraw_equals_never_added_and_order_does_not_matter(tmp_path, shards):
    d1, c1 = fresh(tmp_path, "d1")
    d2, c2 = fresh(tmp_path, "d2")
    d3, c3 = fresh(tmp_path, "d3")
    try:
        ids = register(c1, shards, "ABC")
        r = c1.post(f"/shards/{ids['B']}/withdraw", json={"reason": "test"})
        assert r.status_code == 200
        h1 = r.json()["soup"]["hash"]
        register(c2, shards, "AC")
        register(c3, shards, "CA")
        assert c2.soup()["hash"] == h1
        assert c3.soup()["hash"] == h1
        # bit-identical exported weights, not only the hash
        e1, e3 = c1.get("/soup/export"), c3.get("/soup/export")
        assert e1.status_code == 200 and e3.status_code == 200
        t1 = st_read_bytes(e1.content)
        t3 = st_read_bytes(e3.content)
        assert t1.keys() == t3.keys()
        for k in t1:
            assert t1[k].tobytes() == t3[k].tobytes(), k
        v = c1.post("/soup/verify", json={}).json()
        assert v["match"] is True and v["live_hash"] == v["rebuilt_hash"] == h1
    finally:
        for d in (d1, d2, d3):
            d.stop()


def st_read_bytes(b):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(b)
        f.flush()
        return st_read(f.name)[0]


def test_export_within_stated_bound_of_fp64_reference(admin, shards):
    register(admin, shards, "ABC")
    r = admin.get("/soup/export")
    assert r.status_code == 200
    assert r.headers["X-Soup-Hash"] == admin.soup()["hash"]
    got = st_read_bytes(r.content)
    base = base_tensors()
    ks = {n: round(WEIGHTS[n] * 65536) for n in "ABC"}
    K = sum(ks.values())
    worst = 0.0
    for name, b in base.items():
        assert got[name].dtype == np.float32 and got[name].shape == b.shape
        ref = sum(ks[n] * shards[n][name].astype(np.float64) for n in "ABC") / K
        mag = float(np.abs(b).max()) if b.size else 0.0
        e = math.frexp(mag)[1] if mag > 0 else -16  # smallest e with mag < 2^e
        e = min(max(e, -16), 100)
        F = 30 - e
        bound = 2.0 ** -(F + 1) + np.abs(ref) * 2.0**-52 + np.spacing(
            np.abs(ref).astype(np.float32)).astype(np.float64) / 2
        err = np.abs(got[name].astype(np.float64) - ref)
        assert np.all(err <= bound * (1 + 1e-9)), (name, float((err - bound).max()))
        if ref.size:
            worst = max(worst, float((err / np.maximum(bound, 1e-300)).max()))
    assert worst > 0  # the comparison really ran on nonzero errors somewhere
    print(f"worst error / stated bound = {worst:.3f}")


def test_reweight_back_and_forth_returns_the_hash(admin, shards):
    ids = register(admin, shards, "AB")
    h0 = admin.soup()["hash"]
    for w in (3.0, 0.125, 7.5):
        r = admin.patch(f"/shards/{ids['A']}", json={"weight": w})
        assert r.status_code == 200 and r.json()["soup"]["hash"] != h0
    assert admin.patch(f"/shards/{ids['A']}", json={"weight": 1.0}).json()["soup"]["hash"] == h0


def test_kill9_after_withdrawal_keeps_it(tmp_path, shards):
    d = Daemon(tmp_path / "data").start()
    c = Client(d, d.admin_token())
    ids = register(c, shards, "ABC")
    r = c.post(f"/shards/{ids['B']}/withdraw", json={})
    assert r.status_code == 200
    h = r.json()["soup"]["hash"]
    v = r.json()["soup"]["version"]
    d.kill9()
    d.start()
    try:
        c = Client(d, d.admin_token())
        assert c.get(f"/shards/{ids['B']}").json()["status"] == "withdrawn"
        s = c.soup()
        assert s["hash"] == h and s["version"] == v
        assert {m["name"] for m in s["members"]} == {"A", "C"}
        assert c.post("/soup/verify", json={}).json()["match"] is True
        sha_b = c.get(f"/shards/{ids['B']}").json()["sha256"]
        assert not (d.data_dir / "shards" / f"{sha_b}.safetensors").exists()
    finally:
        d.stop()


def test_restart_rebuilds_the_same_soup(tmp_path, shards):
    d = Daemon(tmp_path / "data").start()
    c = Client(d, d.admin_token())
    register(c, shards, "AC")
    s0 = c.soup()
    assert d.stop() == 0
    d.start()
    try:
        s1 = Client(d, d.admin_token()).soup()
        assert (s1["hash"], s1["version"]) == (s0["hash"], s0["version"])
    finally:
        d.stop()


def test_clean_restart_uses_the_snapshot_and_a_stale_one_is_ignored(tmp_path, shards):
    d = Daemon(tmp_path / "data").start()
    c = Client(d, d.admin_token())
    ids = register(c, shards, "AB")
    s0 = c.soup()
    assert d.stop() == 0
    assert (d.data_dir / "soup.snapshot").exists()
    d.start()
    try:
        c = Client(d, d.admin_token())
        assert "restored from the snapshot" in d.logs()
        assert (c.soup()["hash"], c.soup()["version"]) == (s0["hash"], s0["version"])
        assert c.post("/soup/verify", json={}).json()["match"] is True
        # a change after the snapshot, then a crash: the snapshot is stale
        r = c.post(f"/shards/{ids['A']}/withdraw", json={})
        h = r.json()["soup"]["hash"]
    finally:
        d.kill9()
    d.start()
    try:
        c = Client(d, d.admin_token())
        assert "rebuilding" in d.logs()
        assert c.soup()["hash"] == h
        assert c.post("/soup/verify", json={}).json()["match"] is True
    finally:
        d.stop()


def test_restart_after_every_shard_is_withdrawn(tmp_path, shards):
    d = Daemon(tmp_path / "data").start()
    c = Client(d, d.admin_token())
    ids = register(c, shards, "A")
    r = c.post(f"/shards/{ids['A']}/withdraw", json={}).json()["soup"]
    d.kill9()
    d.start()
    try:
        s = Client(d, d.admin_token()).soup()
        assert (s["version"], s["hash"]) == (r["version"], r["hash"]) and s["members"] == []
    finally:
        d.stop()

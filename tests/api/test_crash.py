"""kill -9 at named points of a registration and a withdrawal
(reliability.md items 4, 5): after a restart the registry passes
integrity_check, the shard is wholly present or wholly absent, no orphan file
or row is left, and the soup hash equals a from-scratch rebuild."""
import sqlite3

import pytest
import requests

from conftest import Client, Daemon, make_shard, st_bytes, store_files


@pytest.fixture(scope="module")
def blobs():
    return st_bytes(make_shard(21)), st_bytes(make_shard(22))


def check_consistent(d):
    db = sqlite3.connect(d.data_dir / "soupd.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    c = Client(d, d.admin_token())
    active = c.get("/shards?status=active").json()["shards"]
    assert store_files(d) == sorted(s["sha256"] + ".safetensors" for s in active)
    assert list((d.data_dir / "tmp").iterdir()) == []
    v = c.post("/soup/verify", json={}).json()
    assert v["match"] is True
    soup = c.soup()
    assert {m["id"] for m in soup["members"]} == {s["id"] for s in active}
    hist = c.get("/soup/history").json()["versions"]
    assert hist[-1]["version"] == soup["version"] and hist[-1]["hash"] == soup["hash"]
    return c, active


@pytest.mark.parametrize("point,committed", [("register.stored", False),
                                             ("register.applied", False),
                                             ("register.committed", True)])
def test_kill9_during_registration(tmp_path, blobs, point, committed):
    d = Daemon(tmp_path / "data").start()
    c = Client(d, d.admin_token())
    assert c.upload(blobs[0], "first").status_code == 201
    d.stop()
    d.env = {"SOUPD_CRASH_AT": point}
    d.start()
    c = Client(d, d.admin_token())
    with pytest.raises(requests.ConnectionError):
        c.upload(blobs[1], "second")
    d.proc.wait(10)
    assert d.proc.returncode == -9
    d.env = {}
    d.start()
    try:
        c, active = check_consistent(d)
        assert sorted(s["name"] for s in active) == (["first", "second"] if committed
                                                    else ["first"])
    finally:
        d.stop()


@pytest.mark.parametrize("point,committed", [("withdraw.applied", False),
                                             ("withdraw.committed", True)])
def test_kill9_during_withdrawal(tmp_path, blobs, point, committed):
    d = Daemon(tmp_path / "data").start()
    c = Client(d, d.admin_token())
    ids = [c.upload(b, n).json()["shard"]["id"] for b, n in zip(blobs, ("a", "b"))]
    d.stop()
    d.env = {"SOUPD_CRASH_AT": point}
    d.start()
    c = Client(d, d.admin_token())
    with pytest.raises(requests.ConnectionError):
        c.post(f"/shards/{ids[0]}/withdraw", json={"purge": True})
    d.proc.wait(10)
    d.env = {}
    d.start()
    try:
        c, active = check_consistent(d)
        assert [s["id"] for s in active] == ([ids[1]] if committed else ids)
    finally:
        d.stop()

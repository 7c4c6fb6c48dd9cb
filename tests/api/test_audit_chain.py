"""The audit log as a hash chain (issue 16): an intact log verifies through
`soupd audit verify` and GET /events/verify; editing, deleting or reordering
an event in the SQLite file offline (triggers dropped with the sqlite3 tool)
is detected and the first broken event named."""
import shutil
import subprocess

import pytest

from conftest import BIN, Client, Daemon, make_shard, st_bytes


def audit_verify(data_dir):
    return subprocess.run([BIN, "audit", "verify", "--data-dir", str(data_dir)],
                          capture_output=True, text=True)


def sql(data_dir, script):
    subprocess.run(["sqlite3", str(data_dir / "soupd.db")], input=script, text=True, check=True)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A stopped daemon's data directory with a few events, and their ids."""
    tmp = tmp_path_factory.mktemp("audit")
    d = Daemon(tmp / "data").start()
    try:
        admin = Client(d, d.admin_token())
        ids = [admin.upload(st_bytes(make_shard(s)), f"s{s}", 1.0).json()["shard"]["id"]
               for s in (1, 2)]
        assert admin.post(f"/shards/{ids[0]}/withdraw", json={"reason": "r"}).status_code == 200
        assert admin.post("/soup/verify").status_code == 200
        v = admin.get("/events/verify")
        assert v.status_code == 200, v.text
        body = v.json()
        events = [e["id"] for e in admin.get("/events").json()["events"]]
    finally:
        d.stop()
    assert body["ok"] is True and body["first_broken"] is None, body
    assert body["events"] == body["chained"] == len(events) >= 4
    return tmp / "data", events


def tampered(logged, tmp_path, script):
    src, events = logged
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    sql(dst, "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;\n" + script)
    return dst, events


def test_intact_log_verifies(logged):
    r = audit_verify(logged[0])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "audit log intact" in r.stdout and "3 signed checkpoints valid" in r.stdout, r.stdout


def test_edited_event_is_named(logged, tmp_path):
    _, events = logged
    k = events[2]
    dst, _ = tampered(logged, tmp_path,
                      f"UPDATE events SET detail = '{{\"reason\":\"other\"}}' WHERE id = {k};")
    r = audit_verify(dst)
    assert r.returncode == 1
    assert f"BROKEN at event {k}:" in r.stdout and "was changed" in r.stdout, r.stdout
    # the running daemon reports the same at GET /events/verify
    d = Daemon(dst).start()
    try:
        body = Client(d, d.admin_token()).get("/events/verify").json()
    finally:
        d.stop()
    assert body["ok"] is False and body["first_broken"]["event_id"] == k, body


def test_edited_time_is_named(logged, tmp_path):
    _, events = logged
    k = events[1]
    dst, _ = tampered(logged, tmp_path,
                      f"UPDATE events SET at = '2020-01-01T00:00:00.000Z' WHERE id = {k};")
    r = audit_verify(dst)
    assert r.returncode == 1 and f"BROKEN at event {k}:" in r.stdout, r.stdout


def test_deleted_event_is_named(logged, tmp_path):
    _, events = logged
    k = events[1]
    dst, _ = tampered(logged, tmp_path, f"DELETE FROM events WHERE id = {k};")
    r = audit_verify(dst)
    assert r.returncode == 1
    assert f"BROKEN at event {events[2]}:" in r.stdout and "deleted" in r.stdout, r.stdout


def test_reordered_events_are_named(logged, tmp_path):
    _, events = logged
    a, b = events[1], events[2]
    dst, _ = tampered(logged, tmp_path,
                      f"UPDATE events SET id = -1 WHERE id = {a};"
                      f"UPDATE events SET id = {a} WHERE id = {b};"
                      f"UPDATE events SET id = {b} WHERE id = -1;")
    r = audit_verify(dst)
    assert r.returncode == 1
    assert f"BROKEN at event {a}:" in r.stdout and "reordered" in r.stdout, r.stdout


def test_removed_hash_is_named(logged, tmp_path):
    _, events = logged
    k = events[0]
    dst, _ = tampered(logged, tmp_path,
                      f"UPDATE events SET hash = NULL, prev_hash = NULL WHERE id = {k};")
    r = audit_verify(dst)
    assert r.returncode == 1 and f"BROKEN at event {k}:" in r.stdout, r.stdout


def test_truncated_tail_is_caught_by_the_signed_checkpoints(logged, tmp_path):
    """Deleting the newest events leaves a consistent chain; the signed
    checkpoint of a soup change that is gone still names the truncation."""
    _, events = logged
    withdraw_event = events[-2]  # the last soup change (then soup.verified)
    dst, _ = tampered(logged, tmp_path, f"DELETE FROM events WHERE id >= {withdraw_event};")
    r = audit_verify(dst)
    assert r.returncode == 1
    assert f"signed event {withdraw_event} as the head" in r.stdout and "truncated" in r.stdout, \
        r.stdout


def test_forged_checkpoint_fails_its_signature(logged, tmp_path):
    dst, _ = tampered(logged, tmp_path,
                      "DROP TRIGGER audit_checkpoints_no_update;"
                      "UPDATE audit_checkpoints SET body = json_set(body, '$.soup_version', 99)"
                      " WHERE id = 1;")
    r = audit_verify(dst)
    assert r.returncode == 1 and "checkpoint 1" in r.stdout and "signature" in r.stdout, r.stdout

"""Proofs that hold outside the server (issue 16): signed receipts of every
registration and withdrawal, checked offline by `soupd verify-receipt` and
independently by `openssl pkeyutl` over our own RFC 8785 encoding; key
rotation keeps old receipts valid; a loosely readable key stops the start."""
import base64
import json
import os
import shutil
import subprocess

import pytest

from conftest import BIN, Client, Daemon, make_shard, st_bytes

# The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410) before the raw key.
ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")


def canon(obj):
    """RFC 8785 for what receipts hold (ASCII keys, strings, integers, nulls)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_cli(path, *key_args):
    return subprocess.run([BIN, "verify-receipt", str(path), *key_args], capture_output=True,
                          text=True)


def openssl_verify(tmp_path, receipt, public_key_b64):
    """Independent check: OpenSSL's own Ed25519 over the canonical bytes."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    (tmp_path / "msg").write_bytes(canon(body))
    (tmp_path / "sig").write_bytes(base64.b64decode(receipt["signature"]))
    der = ED25519_SPKI + base64.b64decode(public_key_b64)
    pem = ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der).decode() +
           "\n-----END PUBLIC KEY-----\n")
    (tmp_path / "pub.pem").write_text(pem)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                        str(tmp_path / "pub.pem"), "-rawin", "-in", str(tmp_path / "msg"),
                        "-sigfile", str(tmp_path / "sig")], capture_output=True, text=True)
    return r.returncode == 0


@pytest.fixture
def shard_bytes():
    return st_bytes(make_shard(1))


def test_keys_and_receipts(tmp_path, shard_bytes):
    d = Daemon(tmp_path / "data").start()
    try:
        admin = Client(d, d.admin_token())
        prov = Client(d, d.token("provider", "acme"))
        keys = Client(d, None).get("/keys")  # public, no token
        assert keys.status_code == 200, keys.text
        klist = keys.json()["keys"]
        assert len(klist) == 1 and klist[0]["algorithm"] == "ed25519"
        assert klist[0]["retired_at"] is None and len(klist[0]["key_id"]) == 16
        pem = d.data_dir / "keys" / (klist[0]["key_id"] + ".pem")
        assert (pem.stat().st_mode & 0o777) == 0o600

        soup0 = admin.soup()
        r = prov.upload(shard_bytes, "a", 1.0)
        assert r.status_code == 201, r.text
        reg = r.json()
        assert set(reg) >= {"shard", "soup", "receipt"}
        rec = reg["receipt"]
        sid = reg["shard"]["id"]
        assert rec["action"] == "shard.registered" and rec["shard_id"] == sid
        assert rec["sha256"] == reg["shard"]["sha256"] and rec["provider"] == "acme"
        assert rec["soup"]["version_before"] == soup0["version"]
        assert rec["soup"]["hash_after"] == reg["soup"]["hash"]
        assert rec["key_id"] == klist[0]["key_id"] and rec["algorithm"] == "ed25519"

        r = prov.post(f"/shards/{sid}/withdraw", json={"reason": "consent withdrawn"})
        assert r.status_code == 200, r.text
        wd = r.json()
        w = wd["receipt"]
        assert w["action"] == "shard.withdrawn" and w["reason"] == "consent withdrawn"
        assert w["soup"]["hash_before"] == rec["soup"]["hash_after"]
        assert w["soup"]["hash_after"] == wd["soup"]["hash"]
        assert w["verify"]["match"] is True
        assert w["verify"]["rebuilt_hash"] == w["verify"]["live_hash"] == wd["soup"]["hash"]

        listed = prov.get(f"/shards/{sid}/receipts")
        assert listed.status_code == 200
        assert listed.json()["receipts"] == [rec, w]
        assert prov.get("/shards/999/receipts").status_code == 404
        keys_json = Client(d, None).get("/keys").json()
    finally:
        d.stop()

    # offline: the daemon is stopped
    (tmp_path / "keys.json").write_text(json.dumps(keys_json))
    pub = keys_json["keys"][0]["public_key"]
    for i, receipt in enumerate([rec, w]):
        f = tmp_path / f"r{i}.json"
        f.write_text(json.dumps(receipt))
        for args in (["--keys", str(tmp_path / "keys.json")], ["--key", pub],
                     ["--data-dir", str(d.data_dir)]):
            r = verify_cli(f, *args)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("Valid:") and str(receipt["shard_id"]) in r.stdout
        assert openssl_verify(tmp_path, receipt, pub)
    r = verify_cli(tmp_path / "r1.json", "--key", pub)
    assert "withdrawn" in r.stdout and "matched the live soup" in r.stdout
    # the whole withdraw reply verifies too (its "receipt" member)
    (tmp_path / "reply.json").write_text(json.dumps(wd))
    assert verify_cli(tmp_path / "reply.json", "--key", pub).returncode == 0

    # any changed byte of the JSON fails, under the CLI and under openssl
    text = json.dumps(w)
    for old, new in [("consent withdrawn", "consent withdrawm"), ('"match": true', '"match": false'),
                     (w["sha256"][:8], "00000000")]:
        assert old in text
        f = tmp_path / "tampered.json"
        f.write_text(text.replace(old, new, 1))
        r = verify_cli(f, "--key", pub)
        assert r.returncode == 1 and "INVALID" in r.stderr and "does not match" in r.stderr
        assert not openssl_verify(tmp_path, json.loads(f.read_text()), pub)
    # a flipped signature byte fails
    sig = bytearray(base64.b64decode(w["signature"]))
    sig[5] ^= 1
    f.write_text(json.dumps({**w, "signature": base64.b64encode(bytes(sig)).decode()}))
    assert verify_cli(f, "--key", pub).returncode == 1
    # another key fails
    other = tmp_path / "other"
    subprocess.run([BIN, "key", "rotate", "--data-dir", str(other)], check=True,
                   capture_output=True)
    other_keys = json.loads((other / "keys" / "keys.json").read_text())["keys"]
    r = verify_cli(tmp_path / "r1.json", "--key", other_keys[-1]["public_key"])
    assert r.returncode == 1 and "does not match" in r.stderr
    r = verify_cli(tmp_path / "r1.json", "--keys", str(other / "keys" / "keys.json"))
    assert r.returncode == 1 and "not among the given keys" in r.stderr
    # usage errors are exit 2
    assert verify_cli(tmp_path / "r1.json").returncode == 2

    # rotation: a new current key signs, the old one is listed retired, old receipts verify
    r = subprocess.run([BIN, "key", "rotate", "--data-dir", str(d.data_dir)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    d.start()
    try:
        admin = Client(d, d.admin_token())
        klist = Client(d, None).get("/keys").json()["keys"]
        assert len(klist) == 2 and klist[0]["retired_at"] and klist[1]["retired_at"] is None
        r = admin.upload(st_bytes(make_shard(2)), "b", 1.0)
        assert r.status_code == 201, r.text
        assert r.json()["receipt"]["key_id"] == klist[1]["key_id"]
        (tmp_path / "keys2.json").write_text(json.dumps({"keys": klist}))
        (tmp_path / "r2.json").write_text(json.dumps(r.json()["receipt"]))
    finally:
        d.stop()
    for f in ("r0.json", "r1.json", "r2.json"):
        r = verify_cli(tmp_path / f, "--keys", str(tmp_path / "keys2.json"))
        assert r.returncode == 0, (f, r.stderr)


def test_loose_key_permissions_stop_the_start(tmp_path):
    d = Daemon(tmp_path / "data").start()
    d.stop()
    (pem,) = (d.data_dir / "keys").glob("*.pem")
    os.chmod(pem, 0o644)
    d.start(wait=False)
    assert d.proc.wait(60) != 0
    log = d.logs()
    assert "readable or writable by group or others" in log and "chmod 600" in log, log
    os.chmod(pem, 0o600)
    d.start()
    d.stop()

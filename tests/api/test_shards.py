"""/shards over real HTTP: the happy path, ownership, and every bad input of
the control-plane issue, each followed by the check that nothing changed
(shard list, stored files, soup hash)."""
import struct

import numpy as np
import pytest

from conftest import (Client, Daemon, assert_problem, base_tensors, make_shard, st_bytes,
                      store_files)


@pytest.fixture(scope="module")
def shard_a():
    return st_bytes(make_shard(1))


@pytest.fixture(scope="module")
def shard_b():
    return st_bytes(make_shard(2))


def state(c):
    return (c.get("/shards").json(), store_files(c.d), c.soup()["hash"])


def test_register_list_get_withdraw(admin, shard_a):
    prov = Client(admin.d, admin.d.token("provider", "acme"))
    v0 = prov.soup()
    r = prov.upload(shard_a, "animals", weight=1.5, description="cats and dogs")
    assert r.status_code == 201, r.text
    body = r.json()
    sh = body["shard"]
    assert sh["name"] == "animals" and sh["provider"] == "acme" and sh["status"] == "active"
    assert sh["weight"] == 1.5 and sh["dtype"] == "F16" and sh["size_bytes"] == len(shard_a)
    assert sh["params"] == sum(t.size for t in base_tensors().values())
    assert body["soup"]["version"] == v0["version"] + 1 and body["soup"]["hash"] != v0["hash"]
    assert store_files(admin.d) == [sh["sha256"] + ".safetensors"]

    assert prov.get(f"/shards/{sh['id']}").json()["sha256"] == sh["sha256"]
    assert [s["id"] for s in prov.get("/shards?status=active").json()["shards"]] == [sh["id"]]
    assert prov.get("/shards?status=withdrawn").json()["shards"] == []
    soup = prov.soup()
    assert soup["members"][0]["name"] == "animals" and soup["members"][0]["share"] == 1.0

    r = prov.post(f"/shards/{sh['id']}/withdraw", json={"reason": "consent withdrawn"})
    assert r.status_code == 200, r.text
    assert r.json()["shard"]["status"] == "withdrawn"
    assert r.json()["soup"]["hash"] == v0["hash"]  # back to the base, exactly
    assert store_files(admin.d) == []  # purged by default
    assert_problem(prov.post(f"/shards/{sh['id']}/withdraw", json={}), 409)

    types = [e["type"] for e in admin.get("/events").json()["events"]]
    assert types[-2:] == ["shard.registered", "shard.withdrawn"]
    hist = admin.get("/soup/history").json()["versions"]
    assert [h["version"] for h in hist] == [0, 1, 2]


def test_withdraw_without_purge_keeps_the_file(admin, shard_a):
    sh = admin.upload(shard_a, "keep").json()["shard"]
    r = admin.post(f"/shards/{sh['id']}/withdraw", json={"purge": False})
    assert r.status_code == 200
    assert store_files(admin.d) == [sh["sha256"] + ".safetensors"]


def test_provider_cannot_touch_another_providers_shard(admin, shard_a):
    acme = Client(admin.d, admin.d.token("provider", "acme"))
    other = Client(admin.d, admin.d.token("provider", "other"))
    client = Client(admin.d, admin.d.token("client"))
    sh = acme.upload(shard_a, "mine").json()["shard"]
    before = state(admin)
    assert_problem(other.post(f"/shards/{sh['id']}/withdraw", json={}), 403)
    assert_problem(other.patch(f"/shards/{sh['id']}", json={"weight": 2}), 403)
    assert_problem(client.upload(shard_a, "client-upload"), 403)
    assert state(admin) == before
    denied = [e for e in admin.get("/events").json()["events"] if e["type"] == "auth.denied"]
    assert any(e["shard_id"] == sh["id"] and "other" in e["principal"] for e in denied)


def test_unknown_shard_404(admin):
    assert_problem(admin.get("/shards/999"), 404)
    assert_problem(admin.post("/shards/999/withdraw", json={}), 404)
    assert_problem(admin.get("/shards/abc"), 404)


def test_duplicate_active_name_409(admin, shard_a, shard_b):
    assert admin.upload(shard_a, "dup").status_code == 201
    before = state(admin)
    assert_problem(admin.upload(shard_b, "dup"), 409)
    assert state(admin) == before


def test_upload_over_cap_is_413_before_reading(tmp_path, shard_a):
    d = Daemon(tmp_path / "data", extra=["--upload-max-bytes", "4096"]).start()
    try:
        c = Client(d, d.admin_token())
        before = state(c)
        assert_problem(c.upload(shard_a, "big"), 413)
        assert state(c) == before
        assert list((d.data_dir / "tmp").iterdir()) == []
    finally:
        d.stop()


def corrupt_cases():
    """(label, bytes) for every structurally bad file of the issue's list."""
    good = make_shard(3)
    names = sorted(good)
    ok = st_bytes(good)
    n = struct.unpack("<Q", ok[:8])[0]

    def with_header(h, data=b""):
        import json
        hb = json.dumps(h).encode()
        return struct.pack("<Q", len(hb)) + hb + data

    first = names[0]
    t0 = good[first]
    cases = [
        ("under 8 bytes", b"\x01\x02\x03"),
        ("header longer than file", struct.pack("<Q", 10_000) + b"{}"),
        ("header over the cap", struct.pack("<Q", 200_000_000) + b"{}"),
        ("header 2^64-1", struct.pack("<Q", 2**64 - 1) + b"{}"),
        ("header not JSON", struct.pack("<Q", 4) + b"abcd"),
        ("header not an object", with_header([1, 2])),
        ("unknown dtype", with_header({"x": {"dtype": "F17", "shape": [1],
                                             "data_offsets": [0, 4]}}, b"\0" * 4)),
        ("shape overflow", with_header({"x": {"dtype": "F16", "shape": [2**32, 2**32],
                                              "data_offsets": [0, 0]}})),
        ("negative dim", with_header({"x": {"dtype": "F16", "shape": [-1, 2],
                                            "data_offsets": [0, 4]}}, b"\0" * 4)),
        ("gap", with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                             "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                            b"\0" * 12)),
        ("overlap", with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                 "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                                b"\0" * 8)),
        ("trailing bytes", ok + b"\0\0\0\0"),
        ("duplicate name", b"".join([struct.pack("<Q", 118),
                                     b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                     b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}    ',
                                     b"\0" * 8])),
        ("truncated data", ok[:-2]),
    ]
    missing = dict(good)
    del missing[first]
    cases.append(("tensor missing", st_bytes(missing)))
    extra = dict(good)
    extra["extra.weight"] = np.zeros(3, np.float16)
    cases.append(("tensor extra", st_bytes(extra)))
    wrong = dict(good)
    wrong[first] = np.zeros(t0.size + 1, np.float16)
    cases.append(("wrong shape", st_bytes(wrong)))
    for label, val in (("NaN", np.nan), ("Inf", np.inf), ("far out of range", 60000.0)):
        bad = dict(good)
        big = max(names, key=lambda k: good[k].size)
        arr = good[big].copy().reshape(-1)
        arr[arr.size // 2] = val
        bad[big] = arr.reshape(good[big].shape)
        cases.append((label, st_bytes(bad)))
    i32 = {k: v.astype(np.int32) for k, v in good.items()}
    cases.append(("integer dtype", st_bytes(i32)))
    assert n > 0
    return cases


@pytest.mark.parametrize("label,data", corrupt_cases(), ids=[c[0] for c in corrupt_cases()])
def test_bad_file_is_422_and_changes_nothing(admin, shard_a, label, data):
    assert admin.upload(shard_a, "existing").status_code == 201
    before = state(admin)
    p = assert_problem(admin.upload(data, "bad"), 422)
    assert p["detail"]
    assert state(admin) == before, label
    assert list((admin.d.data_dir / "tmp").iterdir()) == []


def test_mismatch_422_lists_the_tensors(admin):
    good = make_shard(4)
    bad = dict(good)
    names = sorted(good)
    bad[names[0]] = np.zeros(7, np.float16)
    del bad[names[1]]
    p = assert_problem(admin.upload(st_bytes(bad), "bad"), 422)
    fields = {e["field"] for e in p["errors"]}
    assert names[0] in fields and names[1] in fields


def test_bad_parameters_422(admin, shard_a):
    before = state(admin)
    for w in ("0", "-1", "nan", "inf", "abc", "1e9"):
        assert_problem(admin.upload(shard_a, "w", weight=w), 422)
    assert_problem(admin.upload(shard_a, ""), 422)
    assert_problem(admin.upload(shard_a, "x" * 200), 422)
    assert state(admin) == before


def test_register_by_path_confined_to_import_dirs(tmp_path, shard_a):
    imp = tmp_path / "imports"
    imp.mkdir()
    (imp / "a.safetensors").write_bytes(shard_a)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(shard_a)
    (imp / "link.safetensors").symlink_to(outside)
    d = Daemon(tmp_path / "data", extra=["--import-dirs", str(imp)]).start()
    try:
        c = Client(d, d.admin_token())
        prov = Client(d, d.token("provider", "acme"))
        assert_problem(c.post("/shards", json={"name": "o", "path": str(outside)}), 403)
        assert_problem(c.post("/shards", json={"name": "l", "path": str(imp / "link.safetensors")}),
                       403)
        assert_problem(c.post("/shards", json={"name": "t", "path": str(imp / "../outside.safetensors")}),
                       403)
        assert_problem(prov.post("/shards", json={"name": "p", "path": str(imp / "a.safetensors")}),
                       403)
        r = c.post("/shards", json={"name": "a", "path": str(imp / "a.safetensors"),
                                    "provider": "acme", "weight": 2, "metadata": {"k": "v"}})
        assert r.status_code == 201, r.text
        sh = r.json()["shard"]
        assert sh["provider"] == "acme" and sh["weight"] == 2.0 and sh["metadata"] == {"k": "v"}
        assert (imp / "a.safetensors").exists()  # the original is untouched
        # the owning provider may withdraw it
        assert prov.post(f"/shards/{sh['id']}/withdraw", json={}).status_code == 200
    finally:
        d.stop()


def test_reweight(admin, shard_a, shard_b):
    a = admin.upload(shard_a, "a").json()["shard"]
    admin.upload(shard_b, "b")
    h0 = admin.soup()["hash"]
    r = admin.patch(f"/shards/{a['id']}", json={"weight": 3.0})
    assert r.status_code == 200 and r.json()["shard"]["weight"] == 3.0
    shares = {m["name"]: m["share"] for m in admin.soup()["members"]}
    assert shares == {"a": 0.75, "b": 0.25}
    assert_problem(admin.patch(f"/shards/{a['id']}", json={"weight": -1}), 422)
    assert_problem(admin.patch(f"/shards/{a['id']}", json={}), 422)
    assert admin.patch(f"/shards/{a['id']}", json={"weight": 1.0}).json()["soup"]["hash"] == h0


def test_original_ldm_names_are_converted(admin):
    """A shard saved with original LDM single-file names (here with VAE and
    text-encoder tensors too) registers as the same UNet; the name mapping
    itself is checked against diffusers in tests/unit/test_formats_keymap.c."""
    from conftest import SRC, st_read
    import tempfile

    path = SRC / "tests/fixtures/unet/tiny-sd2_ldm.safetensors"
    r = admin.upload(path.read_bytes(), "ldm")
    assert r.status_code == 201, r.text
    sh = r.json()["shard"]
    base = base_tensors()
    assert sh["tensors"] == len(base)
    exp = admin.get("/soup/export")
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(exp.content)
        f.flush()
        soup = st_read(f.name)[0]
    assert soup.keys() == base.keys()
    ldm = st_read(path)[0]
    unet = [v for k, v in ldm.items() if k.startswith("model.diffusion_model.")]
    want = np.sort(np.concatenate([v.astype(np.float64).ravel() for v in unet]))
    got = np.sort(np.concatenate([v.astype(np.float64).ravel() for v in soup.values()]))
    assert np.abs(want - got).max() <= 1e-6 * np.abs(want).max()

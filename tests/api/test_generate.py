"""/generate and /jobs over real HTTP against the real daemon on the shipped
tiny model: determinism, provenance, visibility of withdrawals, limits,
backpressure, cancellation."""
import json
import struct
import threading
import time
import zlib

import pytest
import requests

from conftest import Client, Daemon, assert_problem, make_shard, st_bytes

SMALL = {"steps": 3, "width": 64, "height": 64}
# A job that runs for seconds on any machine here, so it can be watched and cancelled.
SLOW = {"steps": 150, "width": 192, "height": 192}


def png_chunks(data):
    """[(type, payload)] of a PNG, checking signature and CRCs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        t = data[i + 4:i + 8]
        payload = data[i + 8:i + 8 + n]
        crc = struct.unpack(">I", data[i + 8 + n:i + 12 + n])[0]
        assert crc == zlib.crc32(t + payload), t
        out.append((t.decode(), payload))
        i += 12 + n
    assert out[-1][0] == "IEND"
    return out


def png_texts(data):
    texts = {}
    for t, p in png_chunks(data):
        if t == "tEXt":
            k, v = p.split(b"\0", 1)
            texts[k.decode("latin-1")] = v.decode("latin-1")
        elif t == "iTXt":
            k, rest = p.split(b"\0", 1)
            # compression flag, method, language\0, translated keyword\0, text
            rest = rest[2:]
            _, rest = rest.split(b"\0", 1)
            _, text = rest.split(b"\0", 1)
            texts[k.decode("latin-1")] = text.decode("utf-8")
    return texts


def png_size(data):
    ihdr = png_chunks(data)[0]
    assert ihdr[0] == "IHDR"
    return struct.unpack(">II", ihdr[1][:8])


def gen_png(c, **kw):
    body = {"prompt": "a red cube", "seed": 42, **SMALL, **kw}
    r = c.post("/generate", json=body, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/png"
    return r


def test_png_is_deterministic_and_carries_metadata(tmp_path):
    d = Daemon(tmp_path / "data").start()
    try:
        c = Client(d, d.admin_token())
        a = gen_png(c)
        b = gen_png(c)
        assert a.content == b.content
        assert a.headers["X-Seed"] == "42" and a.headers["X-Soup-Version"] == "0"
        assert a.headers["X-Soup-Hash"] == c.soup()["hash"]
        assert png_size(a.content) == (64, 64)
        other = gen_png(c, seed=43)
        assert other.content != a.content
        wide = gen_png(c, width=96)
        assert png_size(wide.content) == (96, 64)
        t = png_texts(a.content)
        params = t["parameters"]
        assert params.startswith("a red cube\nSteps: 3, ")
        assert "Seed: 42" in params and "Size: 64x64" in params and "CFG scale: " in params
        prov = json.loads(t["soupd"])
        assert prov["soup_version"] == 0 and prov["members"] == [] and prov["seed"] == 42
        d.stop()
        d.start()
        c = Client(d, d.admin_token())
        assert gen_png(c).content == a.content  # same after a restart
    finally:
        d.stop()


def test_json_response_and_negative_prompt(admin):
    r = admin.post("/generate", json={"prompt": "café ☕", "negative_prompt": "blurry", "n": 2,
                                      "seed": 5, **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["seed"] for i in body["images"]] == [5, 6]
    import base64
    pngs = [base64.b64decode(i["png_base64"]) for i in body["images"]]
    assert pngs[0] != pngs[1]
    texts = png_texts(pngs[0])
    assert "Negative prompt: blurry" in texts["parameters"]
    assert texts["parameters"].startswith("café ☕")  # non-Latin-1 -> iTXt, UTF-8
    assert body["soup"]["version"] == 0 and "denoise_ms" in body["timings"]


def test_provenance_names_exactly_the_active_shards_and_follows_withdrawal(admin):
    shards = {n: st_bytes(make_shard(30 + i)) for i, n in enumerate("AB")}
    ids, shas = {}, {}
    for n, blob in shards.items():
        s = admin.upload(blob, n).json()["shard"]
        ids[n], shas[n] = s["id"], s["sha256"]
    r = gen_png(admin)
    prov = json.loads(png_texts(r.content)["soupd"])
    assert {m["sha256"] for m in prov["members"]} == {shas["A"], shas["B"]}
    assert prov["soup_hash"] == r.headers["X-Soup-Hash"] == admin.soup()["hash"]
    w = admin.post(f"/shards/{ids['B']}/withdraw", json={})
    assert w.status_code == 200
    new = w.json()["soup"]
    for _ in range(2):
        r2 = gen_png(admin)
        assert r2.headers["X-Soup-Version"] == str(new["version"])
        assert r2.headers["X-Soup-Hash"] == new["hash"]
        prov2 = json.loads(png_texts(r2.content)["soupd"])
        assert [m["sha256"] for m in prov2["members"]] == [shas["A"]]
    assert r2.content != r.content


@pytest.mark.parametrize("body,field", [
    ({"width": 4096 + 8}, "width"), ({"height": 63}, "height"), ({"width": 100}, "width"),
    ({"steps": 0}, "steps"), ({"steps": 100000}, "steps"), ({"n": 99}, "n"),
    ({"guidance_scale": -1}, "guidance_scale"), ({"guidance_scale": "7"}, "guidance_scale"),
    ({"prompt": ""}, "prompt"), ({"prompt": "x" * 5000}, "prompt"), ({"prompt": None}, "prompt"),
    ({"scheduler": "lms"}, "scheduler"), ({"seed": -5}, "seed"), ({"bogus": 1}, "bogus"),
    ({"async": "yes"}, "async"),
])
def test_bad_parameters_are_422_before_any_compute(admin, body, field):
    before = admin.get("/stats").json()
    full = {"prompt": "ok", **SMALL, **body}
    if full.get("prompt") is None:
        del full["prompt"]
    p = assert_problem(admin.post("/generate", json=full), 422)
    assert field in {e["field"] for e in p["errors"]}
    after = admin.get("/stats").json()
    assert after["generation"]["requests"] == before["generation"]["requests"]
    assert after["queue"]["succeeded"] == before["queue"]["succeeded"]


def test_nan_guidance_is_422(admin):
    r = admin.post("/generate", data='{"prompt": "x", "guidance_scale": NaN}',
                   headers={"Content-Type": "application/json"})
    p = assert_problem(r, 422)
    assert p["errors"][0]["field"] == "guidance_scale"


def wait_job(c, jid, pred, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = c.get(f"/jobs/{jid}").json()
        if pred(j):
            return j
        time.sleep(0.02)
    raise AssertionError(f"job {jid} never reached the state: {j}")


def test_async_job_progress_and_result(admin):
    r = admin.post("/generate", json={"prompt": "a", "async": True, "seed": 1, **SMALL})
    assert r.status_code == 202
    jid = r.json()["job"]["id"]
    assert r.headers["Location"] == f"/jobs/{jid}"
    j = wait_job(admin, jid, lambda j: j["status"] == "succeeded")
    assert j["progress"] == {"step": 3, "steps": 3}
    assert j["result"]["images"][0]["seed"] == 1
    other = Client(admin.d, admin.d.token("client"))
    assert_problem(other.get(f"/jobs/{jid}"), 404)  # not the owner
    assert_problem(admin.get("/jobs/job_0000000000000000"), 404)


def test_cancel_ends_a_running_job(admin):
    r = admin.post("/generate", json={"prompt": "a", "async": True, **SLOW})
    jid = r.json()["job"]["id"]
    wait_job(admin, jid, lambda j: j["status"] == "running" and j["progress"]["step"] >= 1)
    d = requests.delete(admin.d.url + f"/jobs/{jid}",
                        headers={"Authorization": f"Bearer {admin.token}"})
    assert d.status_code == 200
    j = wait_job(admin, jid, lambda j: j["status"] == "cancelled", timeout=30)
    assert j["progress"]["step"] < 150
    # the worker is free again
    assert gen_png(admin).status_code == 200


def test_queue_bound_gives_429_and_recovers(tmp_path):
    d = Daemon(tmp_path / "data", extra=["--queue-max", "2"]).start()
    try:
        c = Client(d, d.admin_token())
        codes, jobs = [], []
        for _ in range(6):
            r = c.post("/generate", json={"prompt": "a", "async": True, **SLOW})
            codes.append(r.status_code)
            if r.status_code == 202:
                jobs.append(r.json()["job"]["id"])
            else:
                assert_problem(r, 429)
                assert r.headers["Retry-After"]
        assert codes.count(202) in (2, 3) and codes.count(429) >= 3
        # synchronous requests beyond the bound are refused too, while it is full
        results = []

        def sync():
            results.append(c.post("/generate", json={"prompt": "b", **SMALL}).status_code)

        ts = [threading.Thread(target=sync) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert 429 in results
        for jid in jobs:
            requests.delete(d.url + f"/jobs/{jid}", headers={"Authorization": f"Bearer {c.token}"})
        for jid in jobs:
            wait_job(c, jid, lambda j: j["status"] in ("cancelled", "succeeded"))
        assert gen_png(c).status_code == 200  # recovered
        assert c.get("/stats").json()["queue"]["rejected"] >= 3
    finally:
        d.stop()


def test_client_disconnect_cancels_its_synchronous_job(admin):
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(admin.d.url + "/generate", timeout=0.5,
                      json={"prompt": "a", **SLOW},
                      headers={"Authorization": f"Bearer {admin.token}"})
    t0 = time.time()
    while time.time() - t0 < 30:
        if admin.get("/stats").json()["queue"]["cancelled"] >= 1:
            break
        time.sleep(0.05)
    assert admin.get("/stats").json()["queue"]["cancelled"] >= 1
    assert "client disconnected" in admin.d.logs() or "cancelled" in admin.d.logs()


def test_job_time_limit(tmp_path):
    d = Daemon(tmp_path / "data", extra=["--job-timeout-s", "1"]).start()
    try:
        c = Client(d, d.admin_token())
        r = c.post("/generate", json={"prompt": "a", **SLOW})
        p = assert_problem(r, 503)
        assert "time limit" in p["detail"]
    finally:
        d.stop()


def test_metrics_and_stats(admin):
    gen_png(admin)
    m = admin.get("/metrics")
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    assert "soupd_images_total 1" in m.text
    assert 'soupd_generation_latency_seconds{quantile="0.5"}' in m.text
    s = admin.get("/stats").json()
    assert s["generation"]["images"] == 1 and s["soup"]["version"] == 0
    assert requests.get(admin.d.url + "/").text.startswith("<!doctype html>")


def test_compatible_queued_requests_run_as_one_batch(tmp_path):
    """With --max-batch, queued requests of the same shape share one UNet
    batch; each image still equals its unbatched twin (pixels within 1)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    def pixels(png):
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    bodies = [{"prompt": f"request {i}", "seed": 100 + i, "n": 1 + (i == 1), **SMALL}
              for i in range(3)]
    d = Daemon(tmp_path / "batched", extra=["--max-batch", "4"]).start()
    try:
        c = Client(d, d.admin_token())
        blocker = c.post("/generate", json={"prompt": "hold", "async": True, **SLOW}).json()
        wait_job(c, blocker["job"]["id"], lambda j: j["status"] == "running")
        ids = [c.post("/generate", json={**b, "async": True}).json()["job"]["id"] for b in bodies]
        requests.delete(d.url + f"/jobs/{blocker['job']['id']}",
                        headers={"Authorization": f"Bearer {c.token}"})
        done = [wait_job(c, i, lambda j: j["status"] == "succeeded") for i in ids]
        assert "running 3 compatible jobs as one batch" in d.logs()
    finally:
        d.stop()
    d1 = Daemon(tmp_path / "single").start()
    try:
        c1 = Client(d1, d1.admin_token())
        for b, j in zip(bodies, done):
            single = c1.post("/generate", json=b).json()
            assert [i["seed"] for i in single["images"]] == [i["seed"] for i in j["result"]["images"]]
            for x, y in zip(single["images"], j["result"]["images"]):
                px, py = (pixels(base64.b64decode(i["png_base64"])) for i in (x, y))
                assert np.abs(px - py).max() <= 1
    finally:
        d1.stop()

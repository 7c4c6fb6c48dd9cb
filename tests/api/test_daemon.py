"""The daemon as a process: command line, config, health, routing, auth,
shutdown. Real binary, real loopback HTTP."""
import os
import signal
import socket
import stat
import subprocess
import time

import requests

from conftest import BIN, MODEL, Client, Daemon, assert_problem


def test_version_lists_backends():
    """`soupd version` names the backends really built in (CMake passes
    SOUPD_BUILT_CUDA=1 when it built the CUDA backend)."""
    out = subprocess.run([BIN, "version"], capture_output=True, text=True, check=True).stdout
    want = "cpu cuda" if os.environ.get("SOUPD_BUILT_CUDA") == "1" else "cpu"
    assert out.startswith("soupd ") and f"backends: {want}\n" in out, out


def test_typed_options_are_refused_before_the_port_opens(tmp_path):
    """Enum, address, device and size options are checked when they are set:
    a bad value exits 2 naming the option and what it takes, and nothing
    listens or touches the data directory."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    busy.listen()  # a daemon that got as far as listening would fail differently
    cases = (("--log-level", "verbose", "debug, info, warn, error"),
             ("--infer-dtype", "F8", "auto, F32, F16, BF16"),
             ("--log-level", "warn|error", "debug, info, warn, error"),  # found by fuzz_config
             ("--listen", "127.0.0.1:99999", "IPV4:PORT"),
             ("--listen", "nowhere", "IPV4:PORT"),
             ("--device", "cuda:-1", "auto, cpu or cuda[:N]"),
             ("--upload-max-bytes", "12Q", "K, M, G, T"))
    try:
        for flag, val, want in cases:
            data = tmp_path / flag.strip("-")
            args = [BIN, "--data-dir", str(data), flag, val]
            if flag != "--listen":
                args += ["--listen", f"127.0.0.1:{port}"]
            r = subprocess.run(args, capture_output=True, text=True, timeout=30)
            opt = flag[2:].replace("-", "_")
            assert r.returncode == 2 and opt in r.stderr and want in r.stderr, (flag, r.stderr)
            assert "cannot listen" not in r.stderr and not data.exists(), (flag, r.stderr)
    finally:
        busy.close()


def test_size_option_takes_binary_suffixes(tmp_path):
    conf = tmp_path / "soupd.conf"
    conf.write_text("upload_max_bytes = 4K\n")
    d = Daemon(tmp_path / "data", extra=["--config", str(conf)]).start()
    try:
        c = Client(d, d.admin_token())
        r = c.post("/shards?name=big&weight=1", data=b"x" * 5000,
                   headers={"Content-Type": "application/octet-stream"})
        assert_problem(r, 413)
    finally:
        d.stop()


def test_healthz_readyz_and_admin_token_file(daemon):
    r = requests.get(daemon.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert requests.get(daemon.url + "/readyz").status_code == 200
    tok = daemon.data_dir / "admin.token"
    assert stat.S_IMODE(tok.stat().st_mode) == 0o600
    assert tok.read_text().strip() not in daemon.logs()  # the token is never logged
    assert "admin.token" in daemon.logs()


def test_every_response_has_a_request_id(daemon):
    r = requests.get(daemon.url + "/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = requests.get(daemon.url + "/healthz", headers={"X-Request-Id": "bad id\x7f"})
    assert r.headers["X-Request-Id"] != "bad id\x7f" and len(r.headers["X-Request-Id"]) == 16


def test_404_and_405(admin):
    assert_problem(admin.get("/nope"), 404)
    p = assert_problem(requests.delete(admin.d.url + "/soup"), 405)
    assert "GET" in p["detail"]
    r = requests.put(admin.d.url + "/shards", headers={"Authorization": "Bearer x"})
    assert r.status_code == 405 and "POST" in r.headers["Allow"]


def test_401_missing_and_bad_token(daemon):
    r = requests.get(daemon.url + "/soup")
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(requests.get(daemon.url + "/soup", headers={"Authorization": "Bearer nope"}),
                   401)
    assert_problem(requests.get(daemon.url + "/soup", headers={"Authorization": "Basic eA=="}), 401)


def test_403_wrong_role_is_audited(admin):
    client = Client(admin.d, admin.d.token("client"))
    assert client.soup()["version"] == 0
    r = client.post("/soup/verify", json={})
    assert_problem(r, 403)
    ev = admin.get("/events").json()["events"]
    denied = [e for e in ev if e["type"] == "auth.denied"]
    assert denied and denied[-1]["principal"].startswith("client#")


def test_token_create_validates_role(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    bad = subprocess.run([BIN, "token", "create", "--data-dir", str(d), "--role", "root"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "role" in bad.stderr
    nop = subprocess.run([BIN, "token", "create", "--data-dir", str(d), "--role", "provider"],
                         capture_output=True, text=True)
    assert nop.returncode != 0
    ok = subprocess.run([BIN, "token", "create", "--data-dir", str(d), "--role", "provider",
                         "--provider", "acme"], capture_output=True, text=True, check=True)
    assert ok.stdout.startswith("sdp_")
    # only the hash is stored
    assert ok.stdout.strip().encode() not in (d / "soupd.db").read_bytes()


def test_config_file_unknown_key_is_an_error_with_line(tmp_path):
    conf = tmp_path / "soupd.conf"
    conf.write_text("# comment\nthreads = 2\nbogus_key = 1\n")
    r = subprocess.run([BIN, "--config", str(conf), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "3" in r.stderr and "bogus_key" in r.stderr


def test_config_out_of_range_and_env(tmp_path):
    r = subprocess.run([BIN, "--threads", "0", "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "threads" in r.stderr
    env = dict(os.environ, SOUPD_MAX_CONNECTIONS="-5")
    r = subprocess.run([BIN, "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 2 and "SOUPD_MAX_CONNECTIONS" in r.stderr


def test_reference_config_lists_every_option():
    out = subprocess.run([BIN, "config"], capture_output=True, text=True, check=True).stdout
    shipped = (MODEL.parents[2] / "config" / "soupd.conf").read_text()
    assert out == shipped, "config/soupd.conf is out of date: regenerate with `soupd config`"


def test_bad_model_dir_refuses_to_start(tmp_path):
    r = subprocess.run([BIN, "--data-dir", str(tmp_path / "d"), "--model", str(tmp_path),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "model_index.json" in r.stderr


def test_sigterm_exits_zero(tmp_path):
    d = Daemon(tmp_path / "data").start()
    assert d.stop(signal.SIGTERM) == 0
    assert "stopped cleanly" in d.logs()


def test_oversized_json_body_is_413_before_reading(admin):
    big = b"{" + b" " * (2 << 20) + b"}"
    r = admin.post("/soup/verify", data=big, headers={"Content-Type": "application/json"})
    assert_problem(r, 413)


def test_slow_client_is_disconnected_and_healthz_stays_up(tmp_path):
    d = Daemon(tmp_path / "data", extra=["--connection-timeout-s", "1"]).start()
    try:
        s = socket.create_connection(("127.0.0.1", d.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        assert requests.get(d.url + "/healthz", timeout=5).status_code == 200
        s.settimeout(5)
        t0 = time.time()
        data = s.recv(100)
        assert data == b"" or time.time() - t0 < 5  # closed by the server's timeout
        s.close()
    finally:
        d.stop()


def test_malformed_json_is_400(admin):
    r = admin.post("/shards", data=b"{not json", headers={"Content-Type": "application/json"})
    p = assert_problem(r, 400)
    assert "JSON" in p["detail"]


def test_openapi_lists_every_route():
    """schema/openapi.yaml must stay in step with the route table (API.md)."""
    import re

    import yaml

    root = MODEL.parents[2]
    routes = re.findall(r'\.method = "(\w+)",\s*\.pattern = "([^"]+)"',
                        (root / "server/http/routes.c").read_text())
    assert len(routes) > 20
    spec = yaml.safe_load((root / "schema/openapi.yaml").read_text())["paths"]
    for method, pattern in routes:
        path = pattern.replace("{key}", "{id}")
        assert path in spec and method.lower() in spec[path], (method, pattern)


def test_device_choice_is_explicit(tmp_path):
    """--device cuda without a usable GPU (or without the CUDA backend) is an
    error naming the reason; auto falls back to the CPU and says so."""
    # a malformed device is a usage error (2), found when the option is set;
    # a well-formed one this machine cannot honour fails at start (1)
    for dev, want, rc in (("cuda", "CUDA", 1), ("cuda:x", "cuda[:N]", 2),
                          ("tpu", "auto, cpu or cuda", 2)):
        r = subprocess.run([BIN, "--device", dev, "--data-dir", str(tmp_path / dev),
                            "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == rc and want in r.stderr, (dev, r.stderr)
    d = Daemon(tmp_path / "auto", extra=["--device", "auto"]).start()
    try:
        assert "using the CPU backend" in d.logs()
        assert Client(d, d.admin_token()).soup()["device"] == "cpu"
    finally:
        d.stop()

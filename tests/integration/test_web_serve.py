"""The web surface as an operator starts it: `radground serve` (with the node and workers) and
`radground web` (alone), real processes on free ports: the printed console URL and first-account
hint, HTTPS with a certificate, a base path, a port clash, restarts and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.radground_processes import (
    REPO,
    RadGroundProcess,
    child_processes,
    clean_env,
    free_port,
    wait_until,
    write_config,
)
from tests.integration.tls import self_signed_certificate

PASSWORD = "correct horse battery"


def _config(tmp_path: Path, *, web: str = "", port: int | None = None) -> tuple[Path, int]:
    web_port = free_port() if port is None else port
    config = write_config(
        tmp_path / "radground.toml", workdir=tmp_path, port=free_port(),
        database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        pacs_port=None, fhir_url=None, route_destinations=(),
        extra_toml=f"[web]\nport = {web_port}\n{web}",
    )
    return config, web_port


def _radground(config: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "radground", "--config", str(config), *args], input=input,
        capture_output=True, text=True, timeout=60, env=clean_env(), cwd=REPO, check=False,
    )


def _token(config: Path) -> str:
    added = _radground(config, "users", "add", "ann", "--role", "admin", "--password-stdin",
                       input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    issued = _radground(config, "users", "token", "ann", "--scope", "read")
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip()


def _status(url: str, **options) -> int | None:
    try:
        return httpx.get(url, timeout=5, **options).status_code
    except httpx.HTTPError:
        return None


def _web_child(process: RadGroundProcess) -> int | None:
    return next((pid for pid, command in child_processes(process.popen.pid).items()
                 if " web --listen-fd " in command), None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "zombie"
    return re.search(r"State:\s+\S+ \((\w+)\)", status).group(1)


def test_serve_starts_the_console_restarts_it_and_stops_everything(tmp_path: Path):
    config, web_port = _config(tmp_path)
    serve = RadGroundProcess(config, ["serve"], tmp_path / "logs" / "serve.log")
    try:
        base = f"http://127.0.0.1:{web_port}"
        wait_until(lambda: _status(f"{base}/api/v1/openapi.json") == 401, 90,
                   what="the console answering", logs=[serve])
        log = serve.log_text()
        assert f"console: {base}/" in log
        assert "no accounts yet: create one with  radground users add NAME --role admin" in log
        assert log.index("results: ") < log.index("console: ")

        token = _token(config)
        auth = {"Authorization": f"Bearer {token}"}
        document = httpx.get(f"{base}/api/v1/openapi.json", headers=auth, timeout=10)
        assert document.status_code == 200 and document.json()["info"]["title"] == "RadGround"

        # the supervisor starts a killed web process again, on the same port
        web = wait_until(lambda: _web_child(serve), 30, what="the web child", logs=[serve])
        os.kill(web, signal.SIGKILL)
        restarted = wait_until(lambda: (pid := _web_child(serve)) not in (None, web) and pid,
                               30, what="the web child restarted", logs=[serve])
        wait_until(lambda: _status(f"{base}/api/v1/openapi.json", headers=auth) == 200, 60,
                   what="the restarted console answering", logs=[serve])
        assert "web (pid" in serve.log_text() and "restarting it" in serve.log_text()

        children = list(child_processes(serve.popen.pid))
        assert restarted in children and len(children) >= 3  # web, gpu and io workers
        serve.popen.send_signal(signal.SIGTERM)
        assert serve.popen.wait(60) == 0
        wait_until(lambda: not any(_alive(pid) for pid in children), 30,
                   what="every child of serve gone", logs=[serve])
        assert _status(f"{base}/api/v1/openapi.json") is None
    finally:
        serve.stop()


def test_web_alone_with_tls_under_a_base_path(tmp_path: Path):
    certificate, key = self_signed_certificate(tmp_path / "tls")
    config, web_port = _config(
        tmp_path, web=f'tls_certificate = "{certificate}"\ntls_key = "{key}"\n'
        'base_path = "/radground"\n',
    )
    trusted = ssl.create_default_context(cafile=str(certificate))
    token = _token(config)  # an account exists: no first-account hint
    web = RadGroundProcess(config, ["web"], tmp_path / "logs" / "web.log")
    try:
        base = f"https://127.0.0.1:{web_port}"
        document = f"{base}/radground/api/v1/openapi.json"
        wait_until(lambda: _status(document, verify=trusted) == 401, 60,
                   what="the console answering over TLS", logs=[web])
        log = web.log_text()
        assert f"console: {base}/radground/" in log
        assert "no accounts yet" not in log
        auth = {"Authorization": f"Bearer {token}"}
        answer = httpx.get(document, headers=auth, verify=trusted, timeout=10)
        assert answer.status_code == 200 and answer.json()["info"]["title"] == "RadGround"
        # a proxy that strips the prefix reaches the same routes
        assert _status(f"{base}/api/v1/openapi.json", headers=auth, verify=trusted) == 200
        # TLS only, and a client that does not trust the certificate is refused
        assert _status(f"http://127.0.0.1:{web_port}/radground/api/v1/openapi.json") is None
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(document, timeout=10)
        # the access log has the path, never the query string
        httpx.get(f"{document}?PatientID=SECRET", verify=trusted, timeout=10)
        wait_until(lambda: "/radground/api/v1/openapi.json HTTP/1.1\" 401" in web.log_text(), 10,
                   what="the access log line", logs=[web])
        assert "SECRET" not in web.log_text()

        web.popen.send_signal(signal.SIGTERM)
        assert web.popen.wait(30) == 0
        assert _status(document, verify=trusted) is None
    finally:
        web.stop()


@pytest.mark.parametrize("command", ["serve", "web"])
def test_a_taken_web_port_is_a_clear_message(tmp_path: Path, command: str):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as holder:
        config, web_port = _config(tmp_path, port=holder.getsockname()[1])
        done = _radground(config, command)
    assert done.returncode == 1, done.stderr
    assert (
        f"cannot start the web console: port {web_port} on 127.0.0.1 is already in use by pid "
        f"{os.getpid()}" in done.stderr
    )
    assert "web.port" in done.stderr
    assert "Traceback" not in done.stderr

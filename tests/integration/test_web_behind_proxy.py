"""`radground web` behind a TLS-terminating reverse proxy: the console's session cookie is
``Secure`` when a trusted proxy says the client used HTTPS (``X-Forwarded-Proto``), and the
same header from anyone else is not believed. Real processes on free ports, as
docs/nginx/radground.conf configures them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.radground_processes import (
    REPO,
    RadGroundProcess,
    clean_env,
    free_port,
    wait_until,
    write_config,
)

PASSWORD = "correct horse battery"


def _web(tmp_path: Path, trusted_proxies: str) -> tuple[Path, int]:
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(
        tmp_path / "radground.toml", workdir=tmp_path, port=free_port(),
        database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        pacs_port=None, fhir_url=None, route_destinations=(),
        extra_toml=f'[web]\nport = {port}\nbase_path = "/radground"\n'
                   f"trusted_proxies = {trusted_proxies}\n",
    )
    return config, port


def _add_account(config: Path) -> None:
    added = subprocess.run(
        [sys.executable, "-m", "radground", "--config", str(config), "users", "add", "ann",
         "--role", "admin", "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
        text=True, timeout=60, env=clean_env(), cwd=REPO, check=False,
    )
    assert added.returncode == 0, added.stderr


def _session_cookie(port: int, headers: dict[str, str]) -> str:
    """The Set-Cookie header of a successful console login through the "proxy"."""
    response = httpx.post(
        f"http://127.0.0.1:{port}/radground/login",
        data={"username": "ann", "password": PASSWORD}, headers=headers, timeout=10,
    )
    assert response.status_code == 303, response.text[:500]
    return response.headers["set-cookie"]


def _answering(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/radground/login", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_session_cookie_is_secure_behind_a_trusted_tls_proxy_only(tmp_path: Path):
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    for trusted, secure in (('["127.0.0.1"]', True), ("[]", False)):
        workdir = tmp_path / ("trusted" if secure else "untrusted")
        config, port = _web(workdir, trusted)
        _add_account(config)
        web = RadGroundProcess(config, ["web"], workdir / "logs" / "web.log")
        try:
            wait_until(lambda p=port: _answering(p), 60, what="the console answering",
                       logs=[web])
            cookie = _session_cookie(port, https)
            assert ("; secure" in cookie.lower()) is secure, (trusted, cookie)
            assert "httponly" in cookie.lower() and "path=/radground" in cookie.lower()
            # the same proxy serving plain HTTP: no Secure flag (the browser would drop it)
            plain = _session_cookie(port, {"X-Forwarded-Proto": "http"})
            assert "; secure" not in plain.lower()
        finally:
            web.stop()

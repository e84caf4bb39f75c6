"""The readiness checks of /readyz on real parts: a database, the SQLite and Redis brokers,
storage with its reserve, the shipped model; each failure says which part and why, without
secrets."""

from __future__ import annotations

import socket
import time

import pytest

from radground.database import database_engine
from radground.readiness import readiness_checks
from radground.settings import (
    DatabaseSettings,
    ModelSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from web.health import NotReadyError, run_checks


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings(tmp_path, **sections) -> Settings:
    values = {
        "storage": StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        "database": DatabaseSettings(url=f"sqlite:///{tmp_path / 'db.sqlite'}"),
        "workers": WorkerSettings(
            outputs_root=tmp_path / "outputs",
            broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        ),
    }
    values.update(sections)
    return Settings(**values)


def _checks(settings: Settings):
    return readiness_checks(settings, database_engine(settings))


def test_every_check_passes_on_a_working_node(tmp_path):
    results = run_checks(_checks(_settings(tmp_path)))
    assert {name: r["ok"] for name, r in results.items()} == {
        "database": True, "broker": True, "storage": True, "model": True}
    assert "MiB free" in results["storage"]["detail"]
    assert list((tmp_path / "instances").iterdir()) == []  # the probe file is gone


def test_storage_at_its_reserve_is_not_ready(tmp_path):
    checks = _checks(_settings(tmp_path, storage=StorageSettings(
        root=tmp_path / "instances", reserve_mb=1 << 40)))
    with pytest.raises(NotReadyError, match="at or below the reserve"):
        checks["storage"]()


def test_storage_that_cannot_be_written_is_not_ready(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the storage root should be")
    checks = _checks(_settings(tmp_path, storage=StorageSettings(root=blocked, reserve_mb=0)))
    with pytest.raises(NotReadyError, match="storage.root .* is not writable"):
        checks["storage"]()


def test_an_unreachable_database_and_broker_are_named_without_their_passwords(tmp_path):
    port = _closed_port()
    settings = _settings(
        tmp_path,
        database=DatabaseSettings(url=f"postgresql+psycopg://rg:hunter2@127.0.0.1:{port}/rg"),
        workers=WorkerSettings(outputs_root=tmp_path / "outputs",
                               broker_url=f"redis://:hunter2@127.0.0.1:{port}/0"),
    )
    started = time.monotonic()
    results = run_checks(_checks(settings))
    assert time.monotonic() - started < 10
    assert results["database"]["ok"] is False and results["broker"]["ok"] is False
    assert f"127.0.0.1:{port}" in results["database"]["detail"]
    assert f"127.0.0.1:{port}" in results["broker"]["detail"]
    assert "hunter2" not in str(results)


def test_a_model_that_cannot_be_loaded_is_not_ready(tmp_path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    settings = _settings(tmp_path, models={"default": ModelSettings(path=str(broken))})
    with pytest.raises(NotReadyError, match="model 'default' .* cannot be loaded"):
        _checks(settings)["model"]()
    broken.unlink()
    with pytest.raises(NotReadyError, match="model 'default'"):
        _checks(settings)["model"]()

"""The readiness checks of ``/readyz``, built from the settings for the web process.

Each check returns a short detail when the part is usable and raises
:class:`web.health.NotReadyError` saying why when it is not; ``web.health`` runs
them concurrently with a deadline. No message carries a secret (URLs are shown
without passwords) or patient data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from radground.settings import ModelSettings, Settings
from web.health import NotReadyError

__all__ = ["readiness_checks"]

#: Seconds the broker may take to accept a connection.
BROKER_TIMEOUT_SECONDS = 3.0


def readiness_checks(settings: Settings, engine: Engine) -> dict[str, Callable[[], str]]:
    """``database``, ``broker``, ``storage`` and ``model`` checks for ``settings``'s node."""
    return {
        "database": lambda: _database(engine),
        "broker": _broker_check(settings),
        "storage": lambda: _storage(
            Path(settings.storage.root), Path(settings.workers.outputs_root),
            reserve_bytes=settings.storage.reserve_mb * 1024 * 1024,
        ),
        "model": _ModelCheck(settings),
    }


def _database(engine: Engine) -> str:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise NotReadyError(
            f"{_url_without_password(str(engine.url))}: {type(exc).__name__}"
        ) from None
    return f"{engine.dialect.name} answers"


def _url_without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: say nothing of it
        return "the configured URL"


def _broker_check(settings: Settings) -> Callable[[], str]:
    from radground.runtime import configure_celery

    app = configure_celery(settings)
    shown = _url_without_password(settings.workers.broker_url)

    def check() -> str:
        try:
            with app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - kombu raises the transport's own errors
            raise NotReadyError(f"{shown}: {type(exc).__name__}") from None
        return f"{shown} accepts connections"

    return check


def _storage(root: Path, outputs_root: Path, *, reserve_bytes: int) -> str:
    for folder, what in ((root, "storage.root"), (outputs_root, "workers.outputs_root")):
        probe = folder / f".readyz-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with probe.open("wb") as handle:
                handle.write(b"ready")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise NotReadyError(f"{what} {folder} is not writable ({exc.strerror})") from None
        finally:
            with contextlib.suppress(OSError):  # not there, or its folder is not a folder
                probe.unlink(missing_ok=True)
    free = shutil.disk_usage(root).free
    mib = 1024 * 1024
    if free <= reserve_bytes:
        raise NotReadyError(
            f"{free // mib} MiB free in storage.root, at or below the reserve of "
            f"{reserve_bytes // mib} MiB (storage.reserve_mb): instances are refused"
        )
    return f"writable, {free // mib} MiB free (reserve {reserve_bytes // mib} MiB)"


class _ModelCheck:
    """The models the routes use can be loaded: the file is there and readable (an ONNX
    model's metadata and operating points are checked as a worker checks them at load;
    an unchanged file is not read again)."""

    def __init__(self, settings: Settings) -> None:
        used = dict.fromkeys(route.model for route in settings.routes)
        self._models = {name: settings.models.get(name) for name in used}
        self._checked: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def __call__(self) -> str:
        for name, model in self._models.items():
            if model is None:
                raise NotReadyError(f"model {name!r} is named by a route but not configured")
            with self._lock:
                self._check(name, model)
        return ", ".join(self._models) + " loadable"

    def _check(self, name: str, model: ModelSettings) -> None:
        path = _model_path(model)
        try:
            stat = path.stat()
        except OSError as exc:
            raise NotReadyError(f"model {name!r}: {path} ({exc.strerror})") from None
        if self._checked.get(name) == (stat.st_mtime_ns, stat.st_size):
            return
        try:
            _load_without_running(model, path)
        except Exception as exc:  # noqa: BLE001 - whatever the backend refuses, it is not loadable
            raise NotReadyError(
                f"model {name!r} at {path} cannot be loaded ({type(exc).__name__}: {exc})"[:300]
            ) from None
        self._checked[name] = (stat.st_mtime_ns, stat.st_size)


def _model_path(model: ModelSettings) -> Path:
    if model.path:
        return Path(model.path)
    from engine.default_model.config import ONNX_PATH

    return Path(ONNX_PATH)


def _load_without_running(model: ModelSettings, path: Path) -> None:
    """What a worker reads when it loads the model, without a session or a GPU."""
    if model.backend == "onnx":
        from engine.backends.onnxruntime_backend import OnnxDetector

        OnnxDetector(path, max_batch_size=model.max_batch_size)
    elif model.backend == "tensorrt":
        from engine.default_model.metadata import read_onnx_metadata

        read_onnx_metadata(path)
    elif not (path / "config.json").is_file():
        raise NotReadyError(f"{path} has no config.json (a Hugging Face checkpoint directory)")

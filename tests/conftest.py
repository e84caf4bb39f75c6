"""Project-wide test configuration: markers that need hardware or services."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ../shared beside the repository (CI clones main and puts shared/ beside it).
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()


def _has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_nvidia_gpu():
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (TensorRT); none on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: the real images the tests use (see its README)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"shared data not found at {SHARED_DATA}; CI puts shared/ beside the repository"
        )
    return SHARED_DATA


# -- databases: the real PostgreSQL server and embedded SQLite -----------------

POSTGRES_ADMIN_URL = os.environ.get("RADGROUND_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The admin URL of the real PostgreSQL server (tests fail, not skip, without it)."""
    import psycopg

    try:
        with psycopg.connect(
            POSTGRES_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=5
        ):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc}); .ci/run starts it"
        )
    return POSTGRES_ADMIN_URL


def _create_postgres_database(admin_url: str) -> tuple[str, str]:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"radground_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), name


def _drop_postgres_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: embedded SQLite, then the real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'radground.db'}"
        return
    admin = request.getfixturevalue("postgres_server_url")
    url, name = _create_postgres_database(admin)
    yield url
    _drop_postgres_database(admin, name)


@pytest.fixture
def migrated_engine(database_url: str):
    """An engine on a fresh database at the latest schema."""
    from worklist.db import create_db_engine
    from worklist.migrate import upgrade_database

    engine = create_db_engine(database_url)
    upgrade_database(engine)
    yield engine
    engine.dispose()


# -- the machine's shared Redis is not ours to stop -----------------------------

#: The Redis server the machine runs for everyone (tests that stop or restart a
#: broker start a private one: tests/integration/private_redis.py).
SHARED_REDIS_URL = os.environ.get("RADGROUND_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_run_id(url: str) -> str | None:
    """The ``run_id`` of the Redis server at ``url`` (new at every start), or ``None`` if none
    answers."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return str(client.info("server")["run_id"])
        finally:
            client.close()
    except redis.exceptions.ConnectionError:
        return None


@pytest.fixture(scope="session", autouse=True)
def shared_redis_left_running() -> Iterator[None]:
    """Fail the session if the shared Redis was stopped or restarted while the tests ran
    (a restart without persistence loses every other user's queues)."""
    before = redis_run_id(SHARED_REDIS_URL)
    yield
    if before is not None and (after := redis_run_id(SHARED_REDIS_URL)) != before:
        pytest.fail(
            f"the shared Redis at {SHARED_REDIS_URL} was "
            f"{'stopped' if after is None else 'restarted'} during the tests; a test that needs "
            "to stop its broker must start a private one (tests/integration/private_redis.py)"
        )

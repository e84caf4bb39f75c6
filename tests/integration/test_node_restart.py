"""`radground serve` killed while a study is pending: after a restart the study becomes ready
once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import select

from tests.factories import write_series
from tests.integration.dcmtk import echoscu, storescu
from worklist.db import create_db_engine, make_session_factory
from worklist.models import RevisionState, Study, StudyRevision

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(config: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADGROUND_")}
    return subprocess.Popen(
        [sys.executable, "-m", "radground", "--config", str(config), "serve"],
        cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
    )


def wait_for_echo(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if echoscu(port).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"node did not answer C-ECHO on port {port}")


def revisions(url: str, study_uid: str) -> list[StudyRevision]:
    engine = create_db_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(
                select(StudyRevision).join(Study).where(Study.study_instance_uid == study_uid)
            ))
    finally:
        engine.dispose()


def test_killed_node_resumes_pending_study_after_restart(tmp_path, database_url):
    port = free_port()
    config = tmp_path / "radground.toml"
    config.write_text(
        f"""
[node]
port = {port}
listener_processes = 2
[storage]
root = "{tmp_path / 'instances'}"
reserve_mb = 0
[database]
url = "{database_url}"
[completion]
idle_seconds = 4
poll_seconds = 0.3
"""
    )
    log = tmp_path / "node.log"
    study = generate_uid()
    files = write_series(tmp_path / "study", 3, study_instance_uid=study)

    first = start_node(config, log)
    try:
        wait_for_echo(port)
        assert storescu(port, files).responses == ["Success"] * 3
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: no clean shutdown, listeners orphaned
        first.wait(10)
    pending = revisions(database_url, study)
    assert [(r.revision, r.state) for r in pending] == [(1, RevisionState.RECEIVING)]

    time.sleep(1.5)  # the orphaned listeners notice their parent is gone and release the port
    second = start_node(config, log)
    try:
        wait_for_echo(port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = revisions(database_url, study)
            if done and done[0].dispatched_at is not None:
                break
            time.sleep(0.3)
        time.sleep(1.0)  # a few more monitor passes: nothing may be dispatched twice
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    done = revisions(database_url, study)
    assert [(r.revision, r.state, r.instances_received) for r in done] == [
        (1, RevisionState.READY, 3)
    ]
    assert done[0].dispatched_at is not None
    text = log.read_text()
    assert text.count("revision 1 ready") == 1, text
    assert second.returncode == 0
    assert "Traceback" not in text
    # no patient data and no raw UIDs in the log
    for secret in ("RG-TEST-0001", "Synthetic", "19700101", study):
        assert secret not in text

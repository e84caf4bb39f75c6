"""`radground jobs`, `jobs show` and `jobs cancel` read and act through worklist.views and
worklist.jobs on a real (SQLite) database."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from radground.cli import cli
from tests.index_rows import add_delivery, add_job, add_study
from worklist.db import create_db_engine, make_session_factory
from worklist.jobs_models import DeliveryState, JobState
from worklist.migrate import upgrade_database


@pytest.fixture
def config(tmp_path, monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = tmp_path / "c.toml"
    path.write_text(f"[database]\nurl = '{url}'\n")
    engine = create_db_engine(url)
    upgrade_database(engine)
    with make_session_factory(engine).begin() as session:
        study = add_study(session)
        failed = add_job(session, study, state=JobState.FAILED, last_error="delivery: refused")
        add_delivery(session, failed, state=DeliveryState.FAILED, attempts=2,
                     last_error="0xA700 out of resources")
        queued = add_job(session, study, route="other", state=JobState.QUEUED)
        ids = failed.id, queued.id
    engine.dispose()
    return path, ids


def test_list_show_and_cancel(config):
    path, (failed, queued) = config
    runner = CliRunner()
    listed = runner.invoke(cli, ["--config", str(path), "jobs", "--state", "failed"])
    assert listed.exit_code == 0, listed.output
    assert "delivery: refused" in listed.output and "other" not in listed.output
    shown = runner.invoke(cli, ["--config", str(path), "jobs", "show", str(failed)])
    assert shown.exit_code == 0, shown.output
    assert "delivery to PACS (dicom): failed, 2 attempts; 0xA700 out of resources" in shown.output
    cancelled = runner.invoke(cli, ["--config", str(path), "jobs", "cancel", str(queued)])
    assert cancelled.exit_code == 0 and f"job {queued} cancelled" in cancelled.output
    again = runner.invoke(cli, ["--config", str(path), "jobs", "cancel", str(queued)])
    assert again.exit_code != 0 and "only a queued job can be cancelled" in again.output
    listed = runner.invoke(cli, ["--config", str(path), "jobs", "--state", "cancelled"])
    assert "other" in listed.output

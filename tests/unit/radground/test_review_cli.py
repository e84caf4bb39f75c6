"""``radground review export`` and ``radground review figures`` on SQLite and on the real
PostgreSQL server: the dataset is written and audited (ATNA Export and the node's own trail),
refusals are clear and exit 1, the figures print as a table or JSON."""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from radground.cli import cli
from tests.atna_checks import event_id, parse_syslog, participant_object_ids, schema_errors
from tests.index_rows import add_job
from tests.review_rows import add_chest_study, add_review, add_review_finding, make_finding
from worklist.db import create_db_engine, make_session_factory
from worklist.jobs_models import AuditEvent
from worklist.migrate import upgrade_database
from worklist.review_models import FindingDecision, RejectReason

SIGNED = datetime(2026, 12, 3, 14, 30, tzinfo=UTC)


@pytest.fixture
def node(database_url: str, tmp_path: Path, shared_data: Path, monkeypatch):
    """A config (database, storage, audit file) and one signed review of a stored chest image:
    an accepted effusion and a rejected nodule."""
    for key in list(os.environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)
    storage, audit_file = tmp_path / "storage", tmp_path / "audit" / "audit.log"
    config = tmp_path / "radground.toml"
    config.write_text(
        f"[database]\nurl = '{database_url}'\n[storage]\nroot = '{storage}'\n"
        f"[audit]\nfile = '{audit_file}'\nspool_dir = '{tmp_path / 'spool'}'\n",
        encoding="utf-8",
    )
    engine = create_db_engine(database_url)
    upgrade_database(engine)
    with make_session_factory(engine).begin() as session:
        png = shared_data / "nih-cxr-boxes" / "images" / "00000072_000.png"
        study, sop = add_chest_study(session, storage, png)
        review = add_review(session, add_job(session, study), signed_at=SIGNED)
        add_review_finding(session, review,
                           model=make_finding("pleural effusion", sop, (10, 20, 110, 220)))
        add_review_finding(session, review, model=make_finding("nodule", sop, (1, 1, 30, 30)),
                           decision=FindingDecision.REJECTED,
                           reject_reason=RejectReason.WRONG_PLACE)
        study_uid = study.study_instance_uid
    yield config, audit_file, engine, study_uid
    engine.dispose()


def _run(config: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config), "review", *args])


def test_export_writes_the_dataset_and_audits_it(node, tmp_path):
    config, audit_file, engine, study_uid = node
    out = tmp_path / "dataset"
    result = _run(config, "export", "--since", "2026-12-03", "--until", "2026-12-03",
                  "--with-pixels", str(out))
    assert result.exit_code == 0, result.output
    assert "1 signed reviews, 2 findings (1 accepted, 1 rejected)" in result.output
    assert "boxes.csv: 1 boxes on 1 images of 1 patients" in result.output
    assert "images/: 1 PNGs" in result.output and "README.md" in result.output
    assert len(list((out / "images").iterdir())) == 1
    assert json.loads((out / "manifest.json").read_text())["period"] == {
        "since": "2026-12-03T00:00:00+00:00", "until": "2026-12-04T00:00:00+00:00",
        "by": "signed_at", "until_excluded": True,
    }
    (line,) = audit_file.read_bytes().splitlines()
    message = parse_syslog(line)
    assert schema_errors(message.xml) == []
    assert event_id(message.root) == "110106"  # Export
    assert participant_object_ids(message.root, "110180") == [study_uid]
    participants = message.root.findall("ActiveParticipant")
    assert participants[0].get("UserID") == f"cli:{getpass.getuser()}"
    assert participants[1].get("UserID") == out.resolve().as_uri()
    with make_session_factory(engine)() as session:
        (entry,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "review-exported")
        ).all()
    assert entry.actor == f"cli:{getpass.getuser()}"
    assert entry.detail.startswith("1 reviews, 2 findings, 1 boxes, 1 images to file://")
    assert study_uid not in entry.detail


def test_refusals_are_clear_and_exit_1(node, tmp_path):
    config, audit_file, _, _ = node
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    result = _run(config, "export", "--since", "2026-12-01", str(used))
    assert result.exit_code == 1 and "is not empty; export into a new or empty folder" in (
        result.output)
    empty = tmp_path / "empty-period"
    result = _run(config, "export", "--since", "2026-11-01", "--until", "2026-11-30", str(empty))
    assert result.exit_code == 1
    assert "no review was signed between 2026-11-01" in result.output
    assert "nothing written" in result.output and not empty.exists()
    result = _run(config, "export", "--since", "yesterday", str(empty))
    assert result.exit_code == 2 and "neither a day (YYYY-MM-DD) nor an ISO 8601 time" in (
        result.output)
    result = _run(config, "figures", "--since", "2026-12-04", "--until", "2026-12-01")
    assert result.exit_code == 1 and "the period is empty" in result.output
    assert not audit_file.exists() or audit_file.read_bytes() == b""  # nothing was exported


def test_figures_as_a_table_and_as_json(node):
    config, _, _, _ = node
    table = _run(config, "figures", "--since", "2026-12-01")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert "Rej. wrong place" in lines[0] and "Mean IoU" in lines[0]
    effusion = next(line for line in lines if line.strip().startswith("pleural effusion"))
    assert effusion.split()[2:7] == ["1", "1", "0", "100", "%"]
    assert lines[-1].split()[:4] == ["all", "2", "1", "1"]
    as_json = _run(config, "figures", "--since", "2026-12-03T14:00", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["since"] == "2026-12-03T14:00:00+00:00"
    nodule = next(row for row in data["classes"] if row["class"] == "nodule")
    assert nodule["rejected_by_reason"]["wrong_place"] == 1 and nodule["acceptance_rate"] == 0
    assert data["total"]["reviewed"] == 2 and data["total"]["mean_iou"] == 1.0
    late = _run(config, "figures", "--since", "2026-12-03T15:00")
    assert late.exit_code == 0 and "No review was signed between" in late.output


def test_help_explains_the_dataset_and_its_de_identification():
    result = CliRunner().invoke(cli, ["review", "export", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for phrase in ("boxes.csv", "decisions.jsonl", "--with-pixels", "engine.default_model.train",
                   "pseudonymous", "burned into the pixels", "ATNA Export"):
        assert phrase in text

"""The exported dataset feeds the default model's own commands: chest radiographs made DICOM from
the NIH box subset are reviewed (model boxes moved back onto the radiologists' boxes, false
findings rejected, one finding added), signed, exported with pixels, and then
``engine.default_model.train`` (a tiny run) and ``engine.default_model.evaluate`` read the folder
as they read the NIH subset."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from engine.default_model.config import CLASSES
from engine.report import Box, Region
from tests.index_rows import add_job
from tests.review_rows import add_chest_study, add_review, add_review_finding, make_finding
from worklist.db import create_db_engine, make_session_factory
from worklist.migrate import upgrade_database
from worklist.review.dataset import export_reviews
from worklist.review.dataset_images import image_file_name
from worklist.review_models import FindingDecision, RejectReason

torch = pytest.importorskip("torch")

#: Six images of six patients, two with two boxes (vocabulary names the model would write).
IMAGES = (
    "00000072_000.png", "00000147_001.png", "00000193_019.png", "00000732_005.png",
    "00000830_000.png", "00002106_000.png",
)
MODEL_NAMES = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Effusion": "pleural effusion",
    "Infiltrate": "infiltrate", "Mass": "mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}
SIGNED = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def _nih_boxes(root: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    boxes: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    with (root / "boxes.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["image"] in IMAGES:
                box = tuple(float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
                boxes.setdefault(row["image"], []).append((row["finding"], box))
    return boxes


@pytest.fixture(scope="module")
def exported(shared_data: Path, tmp_path_factory) -> tuple[Path, dict]:
    nih = shared_data / "nih-cxr-boxes"
    truth = _nih_boxes(nih)
    tmp = tmp_path_factory.mktemp("review-dataset")
    engine = create_db_engine(f"sqlite:///{tmp / 'index.db'}")
    upgrade_database(engine)
    expected: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    with make_session_factory(engine).begin() as session:
        for n, name in enumerate(IMAGES):
            study, sop = add_chest_study(session, tmp / "storage", nih / "images" / name)
            review = add_review(session, add_job(session, study),
                                signed_at=SIGNED + timedelta(minutes=n), signed_by=f"rad{n % 2}")
            findings = truth[name]
            for index, (label, box) in enumerate(findings):
                if n == 5 and index == 1:  # the model missed it: the radiologist draws it
                    add_review_finding(session, review, model=None,
                                       final=make_finding(MODEL_NAMES[label], sop, box))
                    continue
                # the model's box is off by 12 pixels; the radiologist moves it back
                off = tuple(v + 12 for v in box)
                model = make_finding(MODEL_NAMES[label], sop, off, confidence=0.6)
                final = replace(model, regions=(Region(model.regions[0].image, Box(*box)),))
                add_review_finding(session, review, model=model, final=final)
            add_review_finding(session, review, model=make_finding("nodule", sop, (30, 30, 60, 60)),
                               decision=FindingDecision.REJECTED,
                               reject_reason=RejectReason.NOT_PRESENT)
            expected[image_file_name(sop, None)] = findings
    engine.dispose()
    out = tmp / "dataset"
    with make_session_factory(create_db_engine(f"sqlite:///{tmp / 'index.db'}"))() as session:
        summary = export_reviews(session, out, since=SIGNED, until=SIGNED + timedelta(hours=1),
                                 storage_root=tmp / "storage", with_pixels=True)
    assert (summary.reviews, summary.images_written, summary.patients) == (6, 6, 6)
    return out, expected


def test_the_export_holds_the_radiologists_boxes_on_the_images_as_displayed(exported):
    from engine.default_model.data import load_dataset

    out, expected = exported
    images = {image.name: image for image in load_dataset(out)}
    assert set(images) == set(expected)
    for name, findings in expected.items():
        image = images[name]
        got = sorted(zip(image.labels.tolist(), image.boxes.tolist(), strict=True))
        want = sorted((CLASSES.index(label), list(box)) for label, box in findings)
        assert [label for label, _ in got] == [label for label, _ in want]
        np.testing.assert_allclose([b for _, b in got], [b for _, b in want], atol=0.01)
    assert len({image.patient_id for image in images.values()}) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rejected"] == 6  # the false nodules stay out of boxes.csv
    assert manifest["counts"]["boxes"] == sum(len(f) for f in expected.values())


def test_train_and_evaluate_read_the_export_directly(exported, tmp_path):
    from engine.default_model import evaluate, train

    out, _ = exported
    run = tmp_path / "run"
    train.main(["--data", str(out), "--out", str(run), "--epochs", "1", "--views", "1",
                "--batch-size", "4", "--threads", "1"])
    log = json.loads((run / "log.json").read_text())
    assert log["train_images"] + log["validation_images"] == 6
    assert log["validation_images"] >= 1 and np.isfinite(log["final_loss_mean_last_epoch"])
    assert (run / "weights.pt").stat().st_size > 0

    pytest.importorskip("onnx")
    from engine.default_model import export

    export.main(["--weights", str(run / "weights.pt"), "--out", str(run / "model.onnx")])
    for model in (run / "model.onnx", None):  # the model just trained, and the shipped one
        metrics = tmp_path / "metrics.json"
        evaluate.main(["--data", str(out), "--json", str(metrics),
                       *(["--model", str(model)] if model else [])])
        result = json.loads(metrics.read_text())
        assert result["validation_images"] == log["validation_images"]
        assert result["train_images"] == log["train_images"]
        all_rows = result["model_rows"]["all"]
        assert all_rows["gt_boxes"] >= 1 and all_rows["images"] == result["validation_images"]
        assert 0.0 <= result["baseline_rows"]["all"]["mean_iou"] <= 1.0

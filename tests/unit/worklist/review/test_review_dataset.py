"""The dataset of signed reviews: boxes.csv as engine.default_model.data reads it, every decision
in decisions.jsonl, the manifest's counts, de-identified PNG copies, and clear refusals."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.default_model.data import load_dataset
from engine.report import Box, Region
from tests.index_rows import add_job
from tests.review_rows import add_chest_study, add_review, add_review_finding, make_finding
from worklist.db import make_session_factory
from worklist.review.dataset import BOXES_CSV_COLUMNS, export_reviews
from worklist.review.dataset_images import image_file_name
from worklist.review.errors import ExportDirectoryNotEmptyError, NoSignedReviewsError
from worklist.review_models import FindingDecision, RejectReason

DAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SINCE, UNTIL = DAY - timedelta(days=1), DAY + timedelta(days=1)
PNG = "00000072_000.png"


@pytest.fixture
def png(shared_data: Path) -> Path:
    return shared_data / "nih-cxr-boxes" / "images" / PNG


@pytest.fixture
def reviewed(migrated_engine, tmp_path, png):
    """Three signed reviews in the period (one image stored, one all rejected, one whose file is
    missing) and one signed before it."""
    storage = tmp_path / "storage"
    factory = make_session_factory(migrated_engine)
    with factory.begin() as session:
        study, sop = add_chest_study(session, storage, png)
        review = add_review(session, add_job(session, study), signed_at=DAY, signed_by="ann")
        effusion = make_finding("pleural effusion", sop, (10, 20, 110, 220))
        add_review_finding(session, review, model=effusion)
        nodule = make_finding("nodule", sop, (300, 300, 340, 340))
        # moved past the right edge: clipped to the 512-pixel image
        moved = replace(nodule, regions=(Region(nodule.regions[0].image, Box(480, 300, 530, 340)),))
        add_review_finding(session, review, model=nodule, final=moved, decided_by="bob")
        add_review_finding(session, review, model=make_finding("mass", sop, (1, 1, 50, 50)),
                           decision=FindingDecision.REJECTED,
                           reject_reason=RejectReason.NOT_PRESENT, reject_note="SECRET NOTE")
        add_review_finding(session, review, model=make_finding("right lung", sop, (0, 0, 9, 9)))
        add_review_finding(session, review, model=None,
                           final=make_finding("气胸", sop, (200, 10, 260, 90), confidence=None))

        rejected_study, rejected_sop = add_chest_study(session, storage, png)
        rejected = add_review(session, add_job(session, rejected_study), signed_at=DAY)
        add_review_finding(session, rejected,
                           model=make_finding("nodule", rejected_sop, (5, 5, 50, 50)),
                           decision=FindingDecision.REJECTED,
                           reject_reason=RejectReason.WRONG_PLACE)

        missing_study, missing_sop = add_chest_study(session, storage, None)
        missing = add_review(session, add_job(session, missing_study), signed_at=DAY)
        add_review_finding(session, missing,
                           model=make_finding("cardiomegaly", missing_sop, (100, 200, 400, 450)))

        early_study, early_sop = add_chest_study(session, storage, png)
        early = add_review(session, add_job(session, early_study), signed_at=SINCE - timedelta(1))
        add_review_finding(session, early, model=make_finding("mass", early_sop, (1, 1, 9, 9)))
        names = {
            "stored": image_file_name(sop, None),
            "rejected": image_file_name(rejected_sop, None),
            "missing": image_file_name(missing_sop, None),
            "early": image_file_name(early_sop, None),
        }
        patient_ids = [s.patient.patient_id for s in (study, rejected_study, missing_study)]
        uids = {"stored": sop, "missing": missing_sop, "study": study.study_instance_uid}
    return factory, storage, names, patient_ids, uids


def _export(factory, storage, out, **options):
    with factory() as session:
        return export_reviews(session, out, since=SINCE, until=UNTIL, storage_root=storage,
                              **options)


def _decisions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]


def test_without_pixels_boxes_csv_names_every_image_and_decisions_keep_everything(
    reviewed, tmp_path
):
    factory, storage, names, patient_ids, uids = reviewed
    out = tmp_path / "export"
    summary = _export(factory, storage, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "boxes.csv", "decisions.jsonl", "manifest.json"
    ]
    with (out / "boxes.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == BOXES_CSV_COLUMNS
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    # the all-rejected image has no row; the missing file's image is listed (fetch it later)
    assert set(by_image) == {names["stored"], names["missing"]}
    stored = sorted(by_image[names["stored"]], key=lambda r: r["finding"])
    assert [r["finding"] for r in stored] == ["Effusion", "Nodule", "Pneumothorax"]
    assert [float(v) for v in (stored[0]["x_min"], stored[0]["y_max"])] == [10.0, 220.0]
    assert [float(stored[1][k]) for k in ("x_min", "x_max")] == [480.0, 512.0]  # final, clipped
    assert {r["all_labels"] for r in stored} == {"Effusion|Nodule|Pneumothorax"}
    (missing,) = by_image[names["missing"]]
    assert missing["finding"] == "Cardiomegaly" and float(missing["x_max"]) == 400.0
    assert stored[0]["patient_id"] != missing["patient_id"]
    assert {int(r["patient_id"]) for r in rows} == {1, 3}  # integers, numbered in this export

    decisions = _decisions(out)
    assert len(decisions) == summary.findings == 7
    mass = next(d for d in decisions if d["model"] and d["model"]["class"] == "mass")
    assert mass["decision"] == "rejected" and mass["reject_reason"] == "not_present"
    assert mass["in_boxes_csv"] is False
    region = mass["model"]["regions"][0]
    assert region["sop_instance_uid"] == uids["stored"]  # the real UID: found again in the PACS
    assert region["image"] == names["stored"] and region["frame_number"] is None
    assert region["series_instance_uid"]
    assert mass["study_instance_uid"] == uids["study"]
    moved = next(d for d in decisions if d["model"] and d["model"]["class"] == "nodule"
                 and d["decision"] == "accepted")
    assert moved["box_moved"] is True and moved["box_iou"] == 0.0  # moved off its old place
    assert moved["model"]["regions"][0]["box"] == [300, 300, 340, 340]
    assert moved["final"]["regions"][0]["box"] == [480, 300, 530, 340]  # as the radiologist left it
    assert moved["final"]["training_class"] == "Nodule" and moved["in_boxes_csv"] is True
    assert moved["model"]["confidence"] == 0.8
    assert (moved["decided_by"], moved["signed_by"]) == ("reviewer-2", "reviewer-1")
    added = next(d for d in decisions if d["model"] is None)
    assert added["origin"] == "radiologist" and added["final"]["training_class"] == "Pneumothorax"
    lung = next(d for d in decisions if d["final"]["class"] == "right lung")
    assert lung["final"]["training_class"] is None and lung["in_boxes_csv"] is False

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {
        "reviews": 3, "findings": 7, "accepted": 5, "rejected": 2, "boxes": 4,
        "boxes_by_class": {"Atelectasis": 0, "Cardiomegaly": 1, "Effusion": 1, "Infiltrate": 0,
                           "Mass": 0, "Nodule": 1, "Pneumonia": 0, "Pneumothorax": 1},
        "images": 2, "patients": 2, "accepted_outside_classes": 1, "images_written": 0,
    }
    assert manifest["period"]["since"] == SINCE.isoformat()
    assert manifest["pixels"]["included"] is False
    assert manifest["pixels"]["burned_in_text_checked"] is False
    assert manifest["pixels"]["images_not_read"] == [
        {"image": names["missing"], "reason": "the stored file is missing"}
    ]
    readme = (out / "README.md").read_text()
    assert "3 signed reviews, 7 reviewed findings" in readme
    assert "pseudonymous, not anonymous" in readme.lower()
    # no patient data, no reject notes, no account names anywhere
    everything = "\n".join(p.read_text() for p in out.iterdir())
    for secret in (*patient_ids, "SECRET NOTE", '"ann"', '"bob"'):
        assert secret not in everything
    assert names["early"] not in everything  # signed before the period
    assert summary.study_instance_uids[0] == uids["study"] and len(summary.study_instance_uids) == 3

    # the default model's loader reads it as it reads the NIH box subset
    images = load_dataset(out)
    assert [im.name for im in images] == sorted([names["stored"], names["missing"]])
    stored_image = next(im for im in images if im.name == names["stored"])
    assert stored_image.boxes.shape == (3, 4) and stored_image.unboxed.size == 0


def test_with_pixels_the_png_is_the_image_as_displayed_without_metadata(reviewed, tmp_path, png):
    factory, storage, names, _, uids = reviewed
    out = tmp_path / "export"
    summary = _export(factory, storage, out, with_pixels=True)
    assert summary.images_written == 1
    assert sorted(p.name for p in (out / "images").iterdir()) == [names["stored"]]
    with Image.open(out / "images" / names["stored"]) as copy:
        assert copy.mode == "L" and copy.size == (512, 512)
        assert copy.info == {} and not getattr(copy, "text", {})  # no metadata chunks
        copied = np.asarray(copy, dtype=np.int16)
    with Image.open(png) as original:
        source = np.asarray(original.convert("L"), dtype=np.int16)
    assert np.abs(copied - source).max() <= 1  # the image's window shows its pixels unchanged
    assert uids["stored"] not in names["stored"]
    # the image whose file is missing is left out of boxes.csv: a PNG it names must exist
    images = load_dataset(out)
    assert [im.name for im in images] == [names["stored"]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pixels"]["images_left_out"] == [
        {"image": names["missing"], "reason": "the stored file is missing"}
    ]
    assert manifest["counts"]["boxes"] == 3 and manifest["counts"]["patients"] == 1
    missing = next(d for d in _decisions(out) if d["final"]["training_class"] == "Cardiomegaly")
    assert missing["in_boxes_csv"] is False
    assert "Images left out" in (out / "README.md").read_text()


def test_an_image_marked_with_burned_in_text_is_never_copied(reviewed, tmp_path):
    import pydicom

    factory, storage, names, _, _ = reviewed
    for path in storage.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    out = tmp_path / "export"
    summary = _export(factory, storage, out, with_pixels=True)
    assert dict(summary.images_left_out)[names["stored"]] == (
        "Burned In Annotation (0028,0301) is YES"
    )
    assert summary.images_written == 0 and list((out / "images").iterdir()) == []


def test_a_folder_that_is_not_empty_or_a_period_without_signatures_is_refused(
    reviewed, tmp_path
):
    factory, storage, _, _, _ = reviewed
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportDirectoryNotEmptyError, match="not empty"):
        _export(factory, storage, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    fresh = tmp_path / "new" / "folder"
    with factory() as session, pytest.raises(NoSignedReviewsError, match="no review was signed"):
        export_reviews(session, fresh, since=UNTIL, until=UNTIL + timedelta(days=1),
                       storage_root=storage)
    assert not fresh.exists()


def test_image_names_hash_the_sop_instance_uid_and_frame():
    single = image_file_name("1.2.826.0.1.3680043.8.498.1", None)
    assert single.endswith(".png") and "1.2.826" not in single and len(single) == 36
    assert image_file_name("1.2.826.0.1.3680043.8.498.1", 3) == single[:-4] + "-f3.png"
    assert image_file_name("1.2.826.0.1.3680043.8.498.2", None) != single

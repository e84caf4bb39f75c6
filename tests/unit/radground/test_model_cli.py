"""``radground model`` commands on the shipped model and a real DICOM chest radiograph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from engine.backends.onnxruntime_backend import OnnxDetector
from radground.model_cli import model


def test_info_names_the_version_and_classes() -> None:
    result = CliRunner().invoke(model, ["info"])
    assert result.exit_code == 0, result.output
    assert OnnxDetector().info.version in result.output
    assert "Cardiomegaly" in result.output
    assert "score thresholds" in result.output


def _rows(output: str) -> dict[str, list[str]]:
    """Cells of each table row of ``output``, by their first cell."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if len(cells) >= 2 and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def test_info_shows_which_classes_are_reported_with_held_out_precision_and_recall() -> None:
    detector = OnnxDetector()
    points = detector.operating_points
    assert points is not None, "the shipped model stores its operating points"
    result = CliRunner().invoke(model, ["info"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["reported classes"] == [", ".join(points.reported_classes)]
    assert rows["not reported by this model"] == [", ".join(points.unreported_classes)]
    assert f"held out: {points.heldout}" in " ".join(result.output.split())  # the title may wrap
    for point in points.classes:
        reported, threshold, precision, recall = rows[point.label]
        assert reported == ("yes" if point.reported else "no")
        if point.reported:
            assert threshold == f"{point.threshold:.2f}"
            assert precision.endswith(f"({point.hits}/{point.predictions})")
            assert precision.startswith(f"{point.hits / point.predictions:.0%}")
        else:
            assert threshold == f"({point.tuning_threshold:.2f})"
        assert recall.endswith(f"({point.hits}/{point.boxes})")


def _head_mr(tmp_path: Path) -> Path:
    from pydicom.uid import MRImageStorage, generate_uid

    from tests.factories import make_ct, write_dataset

    ds = make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid())
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.Modality, ds.BodyPartExamined = "MR", "HEAD"
    return write_dataset(ds, tmp_path / "head-mr.dcm")


def _chest_dx(tmp_path: Path, shared_data: Path, view: str) -> Path:
    from tests.factories import make_chest_dx, write_dataset

    ds = make_chest_dx(
        shared_data / "nih-cxr-boxes" / "images" / "00000072_000.png", view_position=view
    )
    return write_dataset(ds, tmp_path / f"dx-{view}.dcm")


def test_predict_refuses_a_head_mr_and_says_why(tmp_path: Path) -> None:
    result = CliRunner().invoke(model, ["predict", str(_head_mr(tmp_path)), "--json"])
    assert result.exit_code == 1
    assert "head-mr.dcm refused" in result.output
    assert "made for frontal (PA/AP) chest radiographs" in result.output
    assert "Modality (0008,0060) MR is not CR, DX or RG" in result.output
    assert "--force" in result.output
    assert "cardiopulmonary" not in result.output  # no 'normal' chest report for a head


def test_predict_force_runs_the_model_anyway_and_records_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        model, ["predict", str(_head_mr(tmp_path)), "--json", "--force", "--lang", "en"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[: result.output.rindex("}") + 1])
    [problem] = [p for p in payload["problems"] if "(forced)" in p]
    assert "Modality (0008,0060) MR is not CR, DX or RG" in problem


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_predict_accepts_a_frontal_chest_dx(tmp_path: Path, shared_data: Path, view: str) -> None:
    result = CliRunner().invoke(
        model, ["predict", str(_chest_dx(tmp_path, shared_data, view)), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[: result.output.rindex("}") + 1])
    assert payload["problems"] == []


def test_predict_refuses_a_lateral_chest_dx(tmp_path: Path, shared_data: Path) -> None:
    result = CliRunner().invoke(model, ["predict", str(_chest_dx(tmp_path, shared_data, "LL"))])
    assert result.exit_code == 1
    assert "the view (LL) is not AP or PA" in result.output


def test_export_onnx_refuses_bad_class_thresholds_before_exporting(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not read: the thresholds are checked first")
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text('{"Bronchitis": 0.3}')
    result = CliRunner().invoke(
        model, ["export-onnx", "--weights", str(weights), "--out", str(tmp_path / "m.onnx"),
                "--class-thresholds", str(thresholds)]
    )
    assert result.exit_code == 2
    assert "--class-thresholds" in result.output and "Bronchitis" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_predict_prints_bilingual_findings_and_writes_a_preview(
    shared_data: Path, tmp_path: Path
) -> None:
    dicom = shared_data / "dicom" / "RG1_J2KI.dcm"
    png = tmp_path / "preview.png"
    result = CliRunner().invoke(
        model, ["predict", str(dicom), "--lang", "en,zh-CN", "--png", str(png), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[: result.output.rindex("}") + 1])
    assert payload["model"]["name"] == "radground-cxr-det"
    assert set(payload["impression"]) == {"en", "zh-CN"}
    for finding in payload["findings"]:
        assert set(finding["label"]) == {"en", "zh-CN"}
        assert 0.0 < finding["confidence"] <= 1.0
        for x1, y1, x2, y2 in finding["boxes"]:  # source pixels of the 1841 x 1955 image
            assert 0 <= x1 < x2 <= 1841 and 0 <= y1 < y2 <= 1955
    with Image.open(png) as preview:
        assert preview.size == (1841, 1955)
        pixels = np.asarray(preview.convert("RGB")).astype(int)
    coloured = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    # boxes drawn in colour on a gray image
    assert (coloured > 60).any() == bool(payload["findings"])


def test_predict_refuses_a_non_image_with_a_reason(shared_data: Path) -> None:
    result = CliRunner().invoke(model, ["predict", str(shared_data / "dicom" / "liver_rle.dcm")])
    assert result.exit_code != 0
    assert "Error" in result.output


def test_predict_rejects_unknown_languages(shared_data: Path) -> None:
    result = CliRunner().invoke(
        model, ["predict", str(shared_data / "dicom" / "RG1_J2KI.dcm"), "--lang", "xx"]
    )
    assert result.exit_code == 2
    assert "languages" in result.output


def test_preview_draws_without_a_cjk_font(monkeypatch, tmp_path) -> None:
    """The CLI preview uses the exporters' one renderer, and so its font fallback."""
    from engine.report import Box, Finding, ImageRef, Region, Text
    from exporters import preview
    from radground.preview import draw_findings

    monkeypatch.setattr(preview, "CJK_FONT_PATHS", (tmp_path / "none.ttf",))
    monkeypatch.setattr(preview, "LATIN_FONT_PATHS", (tmp_path / "none.ttf",))
    preview._font.cache_clear()
    finding = Finding(
        kind="abnormality",
        label=Text({"en": "nodule", "zh-CN": "结节"}),
        description=Text({"en": "Nodule."}),
        regions=(Region(ImageRef("1.2.3", "1.2.840.10008.5.1.4.1.1.1"), Box(10, 10, 40, 40)),),
        tracking_uid="1.2.3.4",
        confidence=0.5,
    )
    try:
        canvas = draw_findings(np.zeros((64, 80), np.float32), [finding], languages=("en", "zh-CN"))
    finally:
        preview._font.cache_clear()
    assert canvas.size == (80, 64)
    assert np.asarray(canvas)[10, 20].sum() > 0  # the box's top edge


def test_ask_what_is_in_a_region_and_where_a_finding_is(tmp_path: Path, shared_data: Path) -> None:
    from tests.factories import make_chest_dx, write_dataset

    # a held-out radiograph; the radiologist's Cardiomegaly box is 170,211,421,415
    path = write_dataset(
        make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / "00000211_019.png"),
        tmp_path / "cxr.dcm",
    )
    result = CliRunner().invoke(model, ["ask", str(path), "--region", "170,211,421,415", "--json"])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.output)
    assert answer["label"] == {"en": "cardiomegaly", "zh-CN": "心影增大"}
    assert answer["box"] == [170, 211, 421, 415] and answer["confidence"] >= 0.5
    result = CliRunner().invoke(model, ["ask", str(path), "--where", "心影增大", "--lang",
                                        "zh-CN,en"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("心影增大 / cardiomegaly (0.")
    result = CliRunner().invoke(model, ["ask", str(path), "--region", "0,0,40,40"])
    assert result.output.strip() == "The model found nothing in this region."
    result = CliRunner().invoke(model, ["ask", str(path), "--where", "left lung"])
    assert result.exit_code == 1 and "not a finding this model detects" in result.output
    result = CliRunner().invoke(model, ["ask", str(path)])
    assert result.exit_code == 2 and "either --region or --where" in result.output

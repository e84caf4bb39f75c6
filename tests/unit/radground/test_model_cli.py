"""``radground model`` commands on the shipped model and a real DICOM chest radiograph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def test_predict_prints_bilingual_findings_and_writes_a_preview(shared_data: Path, tmp_path: Path) -> None:
    dicom = shared_data / "dicom" / "RG1_J2KI.dcm"
    png = tmp_path / "preview.png"
    result = CliRunner().invoke(model, ["predict", str(dicom), "--lang", "en,zh-CN", "--png", str(png), "--json"])
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
    assert (coloured > 60).any() == bool(payload["findings"])  # boxes drawn in colour on a gray image


def test_predict_refuses_a_non_image_with_a_reason(shared_data: Path) -> None:
    result = CliRunner().invoke(model, ["predict", str(shared_data / "dicom" / "liver_rle.dcm")])
    assert result.exit_code != 0
    assert "Error" in result.output


def test_predict_rejects_unknown_languages(shared_data: Path) -> None:
    result = CliRunner().invoke(model, ["predict", str(shared_data / "dicom" / "RG1_J2KI.dcm"), "--lang", "xx"])
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

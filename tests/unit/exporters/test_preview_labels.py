"""Bilingual labels in the previews: one renderer for the Secondary Capture pictures, the web
console's job picture and `radground model predict --png`."""

from __future__ import annotations

import numpy as np

from engine.report import Box, Finding, ImageRef, Region, Text
from exporters.pr.content import finding_label
from exporters.sc import render_preview


def _finding(labels: dict[str, str], confidence: float | None = 0.81) -> Finding:
    return Finding(
        kind="abnormality", label=Text(labels), description=Text({"en": "x"}),
        regions=(Region(ImageRef("1.2.3", "1.2.840.10008.5.1.4.1.1.1"), Box(1, 1, 5, 5)),),
        tracking_uid="1.2.3.4", confidence=confidence,
    )


def test_finding_label_in_several_languages():
    finding = _finding({"en": "cardiomegaly", "zh-CN": "心影增大"})
    assert finding_label(finding, "zh-CN") == "心影增大 (81%)"
    assert finding_label(finding, ("en", "zh-CN")) == "cardiomegaly / 心影增大 (81%)"
    # a language the finding lacks falls back to its primary label, said once
    assert finding_label(_finding({"en": "nodule"}, None), ("en", "zh-CN")) == "nodule"
    assert len(finding_label(finding, ("en", "zh-CN"), max_bytes=20).encode()) <= 20


def test_render_preview_draws_bilingual_labels(grounded_report, source_images):
    source = source_images[1]
    one = np.asarray(render_preview(grounded_report, source, language="en"))
    both = np.asarray(render_preview(grounded_report, source, language=("en", "zh-CN")))
    assert one.shape == both.shape
    assert (one != both).any()  # the Chinese half of the labels is drawn too

"""The overlay picture: boxes on pixel boundaries, CJK labels, graceful fonts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import ImageDraw

from engine.report import Box
from exporters import preview
from exporters.errors import ExportError
from exporters.preview import Overlay, display_array, render_overlay

YELLOW = (255, 255, 0)


def _mask(image, rgb=YELLOW) -> np.ndarray:
    return (np.asarray(image) == np.asarray(rgb, dtype=np.uint8)).all(axis=2)


def test_box_edges_cover_the_pixels_inside_the_box_boundary():
    gray = np.full((64, 80), 100, dtype=np.uint8)
    image = render_overlay(gray, [Overlay(Box(10, 20, 30, 40), "")], line_width=1)
    assert image.size == (80, 64)
    drawn = _mask(image)
    # Box(10, 20, 30, 40) covers columns 10..29 and rows 20..39 (pixel-space corners).
    ys, xs = np.nonzero(drawn)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 20, 39)
    assert drawn[20:40, 10].all() and drawn[20:40, 29].all()
    assert drawn[20, 10:30].all() and drawn[39, 10:30].all()
    assert not drawn[21:39, 11:29].any()  # an outline, not filled
    untouched = ~drawn
    assert (np.asarray(image)[untouched] == 100).all()
    assert (gray == 100).all()  # input left alone


def test_boxes_past_the_edge_are_clipped_and_labels_stay_inside():
    gray = np.zeros((50, 60), dtype=np.uint8)
    image = render_overlay(gray, [Overlay(Box(-5, -5, 70, 20), "nodule (42%)")], line_width=1)
    drawn = _mask(image)
    assert drawn[0, :].all() and drawn[19, :].all()  # clipped to the image: top edge on row 0
    rgb = np.asarray(image).astype(int)
    yellowish = (rgb[..., 0] > 150) & (rgb[..., 1] > 150) & (rgb[..., 2] < 100)
    # no room above: the label goes just inside the top edge, shrunk to fit the width
    assert yellowish[2:18, 1:59].sum() > 20
    columns_with_text = np.nonzero(yellowish[2:18, 1:59].any(axis=0))[0]
    assert columns_with_text.max() < 57


def test_chinese_labels_render_real_glyphs():
    if not any(p.is_file() for p in preview.CJK_FONT_PATHS):
        pytest.skip("no CJK font installed (Debian fonts-droid-fallback)")
    masks = []
    for text in ("结", "节", "\U0010fffd"):  # two ideographs and a code point no font has
        image = render_overlay(np.zeros((40, 40), dtype=np.uint8), [], line_width=1, font_size=24,
                               caption=text)
        masks.append(_mask(image, (255, 255, 255)))
    assert masks[0].sum() > 20 and masks[1].sum() > 20
    # distinct glyphs, not the same "missing glyph" box
    assert (masks[0] != masks[1]).sum() > 10
    assert (masks[0] != masks[2]).sum() > 10


def test_missing_fonts_fall_back_gracefully(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(preview, "CJK_FONT_PATHS", (tmp_path / "none.ttf",))
    monkeypatch.setattr(preview, "LATIN_FONT_PATHS", (tmp_path / "none.ttf",))
    preview._font.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="exporters.preview"):
            image = render_overlay(
                np.zeros((60, 60), dtype=np.uint8), [Overlay(Box(5, 30, 50, 55), "右肺 lung")]
            )
        assert _mask(image).any()
        assert "no CJK font" in caplog.text
    finally:
        preview._font.cache_clear()


def test_display_array_windows_and_inverts():
    values = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.int32)
    shown = display_array(values, window=(2000, 2000))
    assert shown.dtype == np.uint8
    assert list(shown[0]) == [0, 0, 128, 255, 255]
    assert list(display_array(values, window=(2000, 2000), invert=True)[0]) == [255, 255, 128, 0, 0]
    spread = display_array(np.arange(10000).reshape(100, 100))
    assert spread.min() == 0 and spread.max() == 255
    assert display_array(np.full((4, 4), 7)).max() == 0  # flat image: no division by zero
    with pytest.raises(ExportError, match="width"):
        display_array(values, window=(0, 0))


def test_bad_input_is_refused():
    with pytest.raises(ExportError, match="uint8"):
        render_overlay(np.zeros((4, 4), dtype=np.float32), [])
    with pytest.raises(ExportError, match="rgb"):
        Overlay(Box(0, 0, 1, 1), "x", rgb=(300, 0, 0))
    assert isinstance(
        ImageDraw.Draw(render_overlay(np.zeros((4, 4, 3), dtype=np.uint8), [])), ImageDraw.ImageDraw
    )

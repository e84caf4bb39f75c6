"""The runtime install brings the fonts previews draw Chinese labels with (bug 9).

`make serve` runs `.ci/bootstrap` without ``--test``; previews label findings in
English and Chinese, so the runtime part must install a font whose glyphs cover
CJK ideographs, and the preview font lookups must find it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import ImageFont

from exporters import preview as exporters_preview

REPO = Path(__file__).resolve().parents[3]
#: A code point no font maps: what it draws is the font's missing-glyph (.notdef) box.
UNMAPPED = "\U0010fffd"


def _runtime_debs() -> set[str]:
    text = (REPO / ".ci" / "bootstrap").read_text()
    match = re.search(r'^runtime_debs="([^"]*)"', text, flags=re.MULTILINE)
    assert match, ".ci/bootstrap declares no runtime_debs"
    return set(match.group(1).split())


def _draws_real_glyphs(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> bool:
    """True when every visible character of ``text`` draws something other than the .notdef glyph."""
    missing = (font.getmask(UNMAPPED).size, bytes(font.getmask(UNMAPPED)))
    return all(
        bytes(font.getmask(char)) and (font.getmask(char).size, bytes(font.getmask(char))) != missing
        for char in text
        if not char.isspace()
    )


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg to map font files to packages")
def test_runtime_install_brings_the_first_cjk_and_latin_preview_fonts():
    runtime = _runtime_debs()
    for candidates in (
        exporters_preview.CJK_FONT_PATHS,
        exporters_preview.LATIN_FONT_PATHS,
    ):
        owners = subprocess.run(
            ["dpkg", "-S", str(candidates[0])], capture_output=True, text=True, check=False
        ).stdout
        package = owners.split(":", 1)[0].strip()
        assert package, f"no installed package ships {candidates[0]} (run .ci/bootstrap)"
        assert package in runtime, f"{package} ({candidates[0]}) is not in .ci/bootstrap's runtime_debs"


def test_runtime_fonts_are_not_only_installed_for_the_tests():
    text = (REPO / ".ci" / "bootstrap").read_text()
    test_block = re.search(r'^test_debs="([^"]*)"', text, flags=re.MULTILINE)
    assert test_block is not None
    assert not {"fonts-droid-fallback", "fonts-dejavu-core"} & set(test_block.group(1).split())
    assert {"fonts-droid-fallback", "fonts-dejavu-core"} <= _runtime_debs()


def test_preview_font_lookup_draws_chinese_labels():
    """exporters.preview is the one renderer (radground.preview draws through it)."""
    font = exporters_preview._font(24, True)
    assert _draws_real_glyphs(font, "右肺结节"), (
        "the preview font draws missing-glyph boxes for Chinese labels: install fonts-droid-fallback "
        "(.ci/bootstrap does)"
    )


def test_missing_glyph_check_detects_a_font_without_cjk_glyphs():
    latin_only = ImageFont.truetype(str(exporters_preview.LATIN_FONT_PATHS[0]), 24)
    assert _draws_real_glyphs(latin_only, "Right lung")
    assert not _draws_real_glyphs(latin_only, "右肺")


@pytest.mark.parametrize("stage", ["runtime", "gpu"])
def test_container_images_install_the_runtime_fonts(stage: str):
    """The images draw labels too (previews, key images): they carry the bootstrap's runtime fonts."""
    from tests.unit.radground.test_deployment_files import dockerfile_stages

    runs = " ".join(args for keyword, args in dockerfile_stages()[stage]["steps"] if keyword == "RUN")
    fonts = {deb for deb in _runtime_debs() if deb.startswith("fonts-")}
    assert fonts, ".ci/bootstrap's runtime_debs names no font"
    missing = sorted(deb for deb in fonts if deb not in runs.split())
    assert not missing, f"the {stage} image does not install {missing}"

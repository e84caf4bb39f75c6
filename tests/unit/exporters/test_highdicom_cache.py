"""The memoised highdicom IOD look-up (exporters/_highdicom_cache.py): same bytes as the stock
path, switchable to the stock path, and loud when highdicom no longer has what it replaces."""

from __future__ import annotations

import highdicom._standard_utils as standard_utils
import pytest

from exporters import _highdicom_cache
from exporters.errors import IncompatibleHighdicomError
from exporters.pr import build_presentation_states
from tests.exporters_validators import comparable_bytes


def test_installed_highdicom_has_the_function_the_memoisation_replaces():
    """Fails loudly when an upgraded highdicom renamed, moved or re-signed is_attribute_in_iod."""
    assert _highdicom_cache.highdicom_internals_problems() == []


def test_turned_off_decorated_builds_run_on_highdicoms_own_function():
    @_highdicom_cache.with_memoised_iod_lookups
    def functions_in_use():
        return {m.is_attribute_in_iod for m in _highdicom_cache.PATCHED_MODULES}

    original = standard_utils.is_attribute_in_iod
    assert functions_in_use() == {_highdicom_cache._is_attribute_in_iod}
    _highdicom_cache.set_memoised_iod_lookups(False)
    try:
        assert functions_in_use() == {original}
    finally:
        _highdicom_cache.set_memoised_iod_lookups(True)
    assert {m.is_attribute_in_iod for m in _highdicom_cache.PATCHED_MODULES} == {original}


def test_memoised_and_stock_builds_give_the_same_bytes(grounded_report, source_images):
    _highdicom_cache.set_memoised_iod_lookups(False)
    try:
        stock = build_presentation_states(grounded_report, source_images, language="en", revision=1)
    finally:
        _highdicom_cache.set_memoised_iod_lookups(True)
    memoised = build_presentation_states(grounded_report, source_images, language="en", revision=1)

    assert [comparable_bytes(a) for a in memoised] == [comparable_bytes(b) for b in stock]


def test_a_highdicom_without_the_function_is_refused_not_silently_skipped(monkeypatch):
    monkeypatch.delattr(standard_utils, "is_attribute_in_iod")

    assert any("_standard_utils has no is_attribute_in_iod" in p
               for p in _highdicom_cache.highdicom_internals_problems())
    with pytest.raises(IncompatibleHighdicomError, match="memoise_highdicom_iod_lookups"):
        _highdicom_cache.set_memoised_iod_lookups(True)


def test_a_changed_signature_is_reported(monkeypatch):
    monkeypatch.setattr(_highdicom_cache, "_original", lambda attribute, sop_class_uid, *, path=None: True)

    assert any("expected" in p for p in _highdicom_cache.highdicom_internals_problems())


def test_highdicom_has_an_upper_bound_that_the_installed_version_meets():
    """The patch was checked against the pinned versions only: pyproject must bound them."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    requirements = [Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    (highdicom,) = [r for r in requirements if r.name == "highdicom"]
    assert any(spec.operator == "<" for spec in highdicom.specifier)
    assert version("highdicom") in highdicom.specifier

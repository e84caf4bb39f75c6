"""Memoising highdicom's IOD table look-up (a pure function of static tables).

``highdicom._standard_utils.is_attribute_in_iod(attribute, sop_class_uid,
exclude_path_elements=None)`` walks every attribute of every module of an IOD
on each call, and highdicom calls it for every referenced image of every
graphic annotation and SR image item. Its answer depends only on its arguments
and highdicom's bundled tables, so the cache changes no output (the exporter
tests compare the bytes with highdicom's stock path).

highdicom offers no hook for this, so the memoised function is put in the
module globals of the highdicom modules that call it, only for the duration of
a call decorated with :func:`with_memoised_iod_lookups`, and highdicom's own
function is put back afterwards. Measured gain, the setting that turns it off
(``exporters.memoise_highdicom_iod_lookups``, stock path when false), the pin
and the test that fails when highdicom changes: ``docs/third-party-patches.md``.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import ParamSpec, TypeVar

import highdicom._standard_utils as standard_utils
import highdicom.base as hd_base
import highdicom.sr.content as hd_sr_content

from exporters.errors import IncompatibleHighdicomError

__all__ = [
    "PATCHED_MODULES",
    "highdicom_internals_problems",
    "memoised_iod_lookups_enabled",
    "set_memoised_iod_lookups",
    "with_memoised_iod_lookups",
]

P = ParamSpec("P")
R = TypeVar("R")

#: The highdicom modules whose global ``is_attribute_in_iod`` is replaced during a call.
PATCHED_MODULES: tuple[ModuleType, ...] = (standard_utils, hd_base, hd_sr_content)
_EXPECTED_PARAMETERS = ("attribute", "sop_class_uid", "exclude_path_elements")

_original = getattr(standard_utils, "is_attribute_in_iod", None)
_lock = threading.Lock()
_depth = 0
_enabled = True


def highdicom_internals_problems() -> list[str]:
    """What the installed highdicom lacks of what the memoisation replaces (empty: all there).

    Checks that every module in :data:`PATCHED_MODULES` has ``is_attribute_in_iod``, that they
    all hold the same function, and that its parameters are still
    ``(attribute, sop_class_uid, exclude_path_elements)``.
    """
    problems = []
    for module in PATCHED_MODULES:
        if not hasattr(module, "is_attribute_in_iod"):
            problems.append(f"{module.__name__} has no is_attribute_in_iod")
        elif module.is_attribute_in_iod not in (_original, _is_attribute_in_iod):
            problems.append(
                f"{module.__name__}.is_attribute_in_iod is not the one in _standard_utils"
            )
    if _original is None:
        return problems
    parameters = tuple(inspect.signature(_original).parameters)
    if parameters != _EXPECTED_PARAMETERS:
        problems.append(f"is_attribute_in_iod takes {parameters}, expected {_EXPECTED_PARAMETERS}")
    return problems


def set_memoised_iod_lookups(enabled: bool) -> None:
    """Turn the memoisation on or off for this process (off: highdicom's stock function).

    Raises
    ------
    IncompatibleHighdicomError
        When turning it on and the installed highdicom no longer has what it replaces.
    """
    global _enabled
    if enabled:
        _check_highdicom()
    _enabled = enabled


@functools.cache
def _check_highdicom_once() -> None:
    _check_highdicom()


def _check_highdicom() -> None:
    problems = highdicom_internals_problems()
    if problems:
        raise IncompatibleHighdicomError(
            "exporters.memoise_highdicom_iod_lookups is on but the installed highdicom does "
            f"not match what it patches ({'; '.join(problems)}); set it to false"
        )


def memoised_iod_lookups_enabled() -> bool:
    """Whether decorated calls run with the memoised look-up (see
    :func:`set_memoised_iod_lookups`)."""
    return _enabled


@functools.lru_cache(maxsize=4096)
def _cached(
    attribute: str, sop_class_uid: str, exclude_path_elements: tuple[str, ...] | None
) -> bool:
    assert _original is not None
    return bool(_original(attribute, sop_class_uid, exclude_path_elements))


def _is_attribute_in_iod(
    attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None
) -> bool:
    key = tuple(exclude_path_elements) if exclude_path_elements is not None else None
    return _cached(attribute, str(sop_class_uid), key)


def with_memoised_iod_lookups(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with the memoised look-up installed in :data:`PATCHED_MODULES`.

    Nested and concurrent calls share one installation; with the memoisation turned off
    (:func:`set_memoised_iod_lookups`) ``function`` runs on highdicom's stock path.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        global _depth
        if not _enabled:
            return function(*args, **kwargs)
        _check_highdicom_once()
        with _lock:
            _depth += 1
            for module in PATCHED_MODULES:
                module.is_attribute_in_iod = _is_attribute_in_iod  # type: ignore[attr-defined]
        try:
            return function(*args, **kwargs)
        finally:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    for module in PATCHED_MODULES:
                        module.is_attribute_in_iod = _original  # type: ignore[attr-defined]

    return wrapper

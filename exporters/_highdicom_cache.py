"""Memoising highdicom's IOD table look-up (a pure function of static tables).

``highdicom._standard_utils.is_attribute_in_iod(attribute, sop_class_uid)``
walks every attribute of every module of an IOD on each call, and highdicom
calls it for every referenced image of every graphic annotation and SR image
item: about a quarter of a GSPS build. Its answer depends only on its
arguments and highdicom's bundled tables, so the cache changes no output (the
exporter tests compare with highdicom's own constructors). It is installed
only for the duration of a decorated call and then removed. highdicom is
pinned below 0.29 in pyproject.toml; re-check this when the pin moves.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import highdicom._standard_utils as standard_utils
import highdicom.base as hd_base
import highdicom.sr.content as hd_sr_content

__all__ = ["with_memoised_iod_lookups"]

P = ParamSpec("P")
R = TypeVar("R")

_original = standard_utils.is_attribute_in_iod
# (Any: mypy does not know the patched function as an attribute of all three modules)
_modules: tuple[Any, ...] = (standard_utils, hd_base, hd_sr_content)
_lock = threading.Lock()
_depth = 0


@functools.lru_cache(maxsize=4096)
def _cached(attribute: str, sop_class_uid: str, exclude_path_elements: tuple[str, ...] | None) -> bool:
    return _original(attribute, sop_class_uid, exclude_path_elements)


def _is_attribute_in_iod(
    attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None
) -> bool:
    key = tuple(exclude_path_elements) if exclude_path_elements is not None else None
    return _cached(attribute, str(sop_class_uid), key)


def with_memoised_iod_lookups(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with the memoised look-up installed in the highdicom modules
    that call it (nested and concurrent calls share one installation)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        global _depth
        with _lock:
            _depth += 1
            for module in _modules:
                module.is_attribute_in_iod = _is_attribute_in_iod
        try:
            return function(*args, **kwargs)
        finally:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    for module in _modules:
                        module.is_attribute_in_iod = _original

    return wrapper

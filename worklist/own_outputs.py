"""Recognising RadGround's own outputs when a PACS routes them back (loop prevention).

An instance is ours when its SOP class is one RadGround's exporters write
(each exporter declares its SOP classes: :func:`exporters.registry.own_sop_class_uids`)
and either it names RadGround as manufacturer (directly or in Contributing
Equipment), or its series is one we produced (the artifacts table; that
catches a PACS that rewrote the header). Such instances are stored and
indexed like any other, but never processed.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from exporters.registry import own_sop_class_uids

__all__ = ["OUTPUT_SOP_CLASSES", "RADGROUND_MANUFACTURER", "looks_like_own_output"]

RADGROUND_MANUFACTURER = "RadGround"

#: The SOP classes RadGround writes, as its exporters declare them.
OUTPUT_SOP_CLASSES: frozenset[str] = own_sop_class_uids()


def looks_like_own_output(sop_class_uid: str, header: Dataset) -> bool:
    """Whether an instance's header says RadGround made it."""
    if sop_class_uid not in OUTPUT_SOP_CLASSES:
        return False
    manufacturers = [str(header.get("Manufacturer", ""))]
    for item in header.get("ContributingEquipmentSequence", None) or ():
        manufacturers.append(str(item.get("Manufacturer", "")))
    return RADGROUND_MANUFACTURER in manufacturers

"""Recognising RadGround's own outputs when a PACS routes them back (loop prevention).

An instance is ours when its SOP class is one RadGround produces (SR, GSPS,
Colour PS, Secondary Capture) and either it names RadGround as manufacturer
(directly or in Contributing Equipment), or its series is one we produced
(the artifacts table; that catches a PACS that rewrote the header). Such
instances are stored and indexed like any other, but never processed.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["OUTPUT_SOP_CLASSES", "RADGROUND_MANUFACTURER", "looks_like_own_output"]

RADGROUND_MANUFACTURER = "RadGround"

OUTPUT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
        "1.2.840.10008.5.1.4.1.1.11.2",  # Color Softcopy Presentation State
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    }
)


def looks_like_own_output(sop_class_uid: str, header: Dataset) -> bool:
    """Whether an instance's header says RadGround made it."""
    if sop_class_uid not in OUTPUT_SOP_CLASSES:
        return False
    manufacturers = [str(header.get("Manufacturer", ""))]
    for item in header.get("ContributingEquipmentSequence", None) or ():
        manufacturers.append(str(item.get("Manufacturer", "")))
    return RADGROUND_MANUFACTURER in manufacturers

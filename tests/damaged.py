"""Damaged Part 10 files whose UIDs are intact (made up, no patient data).

Each is a valid CT from :func:`tests.factories.make_ct`, given a nested
sequence and a private element after the UIDs, then damaged in its bytes the
way a broken sender or a cut connection damages an instance: its header still
names its study, series and instance, only its structure is broken.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.factories import make_ct, write_dataset

__all__ = ["DAMAGE_KINDS", "dataset_offset", "intact_ct", "write_damaged", "write_short_of_rows"]

#: The kinds of damage :func:`write_damaged` makes.
DAMAGE_KINDS = ("truncated-pixel-data", "length-past-end", "huge-length", "unterminated-sequences")

_PRIVATE_CREATOR = "RADGROUND TEST"


def intact_ct(*, study_instance_uid: str, series_instance_uid: str, instance_number: int = 1) -> Dataset:
    """A CT with a private OB element after the UIDs and nested sequences of
    undefined length before and after Pixel Data (damage after the UIDs leaves
    the header readable; the header ends at Pixel Data)."""
    ds = make_ct(
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        instance_number=instance_number,
        rows=64,
        columns=64,
    )
    block = ds.private_block(0x0029, _PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "OB", bytes(range(16)))
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-TEST", "99RG", "Test protocol"
    request = Dataset()
    request.ScheduledProcedureStepID = "SPS1"
    request.ScheduledProtocolCodeSequence = [code]
    ds.RequestAttributesSequence = [request]
    for sequence, item in ((ds["RequestAttributesSequence"], request),
                           (request["ScheduledProtocolCodeSequence"], code)):
        sequence.is_undefined_length = True  # ended by a Sequence Delimitation Item
        item.is_undefined_length_sequence_item = True  # ended by an Item Delimitation Item
    trailing = ds.private_block(0x7FE1, _PRIVATE_CREATOR, create=True)
    inner, outer = Dataset(), Dataset()
    inner.add_new(0x7FE11012, "LO", "inner")
    outer.add_new(0x7FE11011, "SQ", [inner])
    trailing.add_new(0x10, "SQ", [outer])
    for sequence, item in ((ds[0x7FE11010], outer), (outer[0x7FE11011], inner)):
        sequence.is_undefined_length = True
        item.is_undefined_length_sequence_item = True
    return ds


def dataset_offset(raw: bytes) -> int:
    """Where the data set starts in a Part 10 file (after the File Meta group, PS3.10 §7.1)."""
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00"
    return 144 + int.from_bytes(raw[140:144], "little")


def write_damaged(kind: str, path: Path, *, study_instance_uid: str, series_instance_uid: str,
                  instance_number: int = 1) -> Path:
    """Write an :func:`intact_ct` damaged as ``kind`` (one of :data:`DAMAGE_KINDS`) to ``path``."""
    ds = intact_ct(study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid,
                   instance_number=instance_number)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    write_dataset(ds, path)
    raw = bytearray(path.read_bytes())
    pixel_header = raw.rindex(b"\xe0\x7f\x10\x00OW\x00\x00")
    pixel_length = struct.unpack_from("<I", raw, pixel_header + 8)[0]
    if kind == "truncated-pixel-data":
        del raw[pixel_header + 12 + pixel_length // 2:]
    elif kind == "length-past-end":
        struct.pack_into("<I", raw, pixel_header + 8, pixel_length + 4096)
    elif kind == "huge-length":
        private = raw.index(b"\x29\x00\x10\x10OB\x00\x00")
        struct.pack_into("<I", raw, private + 8, 0xFFFFFFF0)
    elif kind == "unterminated-sequences":
        start = raw.index(b"\xe1\x7f\x10\x10SQ")  # the private sequences after Pixel Data
        nested = bytes(raw[start:])
        for delimiter in (b"\xfe\xff\x0d\xe0\x00\x00\x00\x00", b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"):
            assert nested.count(delimiter) == 2, "pydicom wrote the sequences with defined length"
            nested = nested.replace(delimiter, b"")
        raw[start:] = nested
    else:
        raise ValueError(f"unknown damage {kind!r}; one of {DAMAGE_KINDS}")
    path.write_bytes(bytes(raw))
    return path


def write_short_of_rows(path: Path, *, study_instance_uid: str, series_instance_uid: str) -> Path:
    """A structurally whole CT whose Rows say 96 while its Pixel Data holds 64 rows:
    readers (dcmtk's storescu among them) read it, no viewer can show it."""
    ds = intact_ct(study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = 96
    return write_dataset(ds, path)

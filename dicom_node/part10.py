"""Part 10 files from received C-STORE data sets, without re-encoding them.

The SCP stores each data set exactly as it arrived, behind a 128-byte preamble,
``DICM`` and File Meta Information (PS3.10 §7.1) encoded here directly: a
handful of elements whose layout is fixed, so building them through pydicom's
general writer is most of the SCP's own cost per instance. The header (the
elements before Pixel Data) is read lazily by pydicom for the checks and the
index; Pixel Data is never touched on the association thread.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_node.errors import DataSetStructureError

__all__ = ["PREAMBLE", "FileMeta", "file_meta_information", "read_header", "split_file_meta"]

#: The 128-byte preamble (all zero) and the DICOM prefix.
PREAMBLE = bytes(128) + b"DICM"

_PIXEL_DATA_GROUP = 0x7FE0
#: Explicit VR with a 4-byte length (PS3.5 §7.1.2).
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)


@dataclass(frozen=True)
class FileMeta:
    """What a Part 10 file's File Meta Information says about its data set (PS3.10 §7.1)."""

    media_storage_sop_class_uid: str
    media_storage_sop_instance_uid: str
    transfer_syntax_uid: str


def file_meta_information(
    *,
    media_storage_sop_class_uid: str,
    media_storage_sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str = "",
    source_application_entity_title: str = "",
) -> bytes:
    """The File Meta Information group (0002,xxxx), Explicit VR Little Endian,
    with its group length, ready to follow :data:`PREAMBLE`."""
    elements = [
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _uid(media_storage_sop_class_uid)),
        _element(0x0003, b"UI", _uid(media_storage_sop_instance_uid)),
        _element(0x0010, b"UI", _uid(transfer_syntax_uid)),
        _element(0x0012, b"UI", _uid(implementation_class_uid)),
    ]
    if implementation_version_name:
        elements.append(_element(0x0013, b"SH", _text(implementation_version_name, 16)))
    if source_application_entity_title.strip():
        elements.append(_element(0x0016, b"AE", _text(source_application_entity_title.strip(), 16)))
    body = b"".join(elements)
    return _element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def read_header(data_set: BinaryIO, transfer_syntax_uid: str) -> Dataset:
    """The elements of the encoded ``data_set`` up to (not including) Pixel Data,
    values decoded lazily.

    A deflated data set is inflated for reading only; what is stored stays as
    received. Raises whatever pydicom or zlib raise for bytes that do not parse.
    """
    syntax = UID(transfer_syntax_uid)
    implicit_vr, little_endian = _encoding(syntax)
    data_set.seek(0)
    if syntax == DeflatedExplicitVRLittleEndian:
        data_set = io.BytesIO(zlib.decompress(data_set.read(), -zlib.MAX_WBITS))
    return read_dataset(data_set, implicit_vr, little_endian, stop_when=_at_pixel_data)


def split_file_meta(head: bytes | bytearray, *, complete: bool) -> tuple[FileMeta, int] | None:
    """The File Meta Information at the start of a Part 10 file, and where its data set begins.

    ``head`` is the file's first bytes; ``complete`` says that it is the whole
    file. Returns ``None`` when ``head`` ends before the data set begins (give
    it more). The meta elements are walked one by one (Explicit VR Little
    Endian, group 0002), so a missing or wrong group length does not matter.

    Raises :class:`~dicom_node.errors.DataSetStructureError` when the bytes are
    not a Part 10 file (no ``DICM`` prefix, a broken meta element, no Transfer
    Syntax or SOP UIDs); its ``offset`` counts from the start of the file.
    """
    if len(head) < len(PREAMBLE):
        if complete:
            raise DataSetStructureError(
                    "not a DICOM Part 10 file: shorter than its preamble", offset=len(head)
                )
        return None
    if head[128:132] != b"DICM":
        raise DataSetStructureError("not a DICOM Part 10 file: no DICM prefix", offset=128)
    values: dict[int, bytes] = {}
    offset = len(PREAMBLE)
    while True:
        if len(head) < offset + 4:
            if not complete:
                return None
            if len(head) == offset:
                break  # a file that is only its meta: an empty data set
            raise DataSetStructureError(
                    "File Meta Information ends inside an element", offset=offset
                )
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            break
        if len(head) < offset + 12:
            if complete:
                raise DataSetStructureError(
                    "File Meta Information ends inside an element", offset=offset
                )
            return None
        vr = bytes(head[offset + 4 : offset + 6])
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", head, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            start = offset + 8
        if length == 0xFFFFFFFF:
            raise DataSetStructureError(
                "File Meta Information element of undefined length", offset=offset
            )
        if len(head) < start + length:
            if complete:
                raise DataSetStructureError(
                    "File Meta Information ends inside an element", offset=offset
                )
            return None
        values[element] = bytes(head[start : start + length])
        offset = start + length
    uids = []
    for element, name in ((0x0002, "Media Storage SOP Class UID"),
                          (0x0003, "Media Storage SOP Instance UID"),
                          (0x0010, "Transfer Syntax UID")):
        value = values.get(element, b"").rstrip(b"\x00 ").decode("ascii", "replace")
        if not value:
            raise DataSetStructureError(f"File Meta Information has no {name}", offset=offset)
        uids.append(value)
    return FileMeta(*uids), offset


def _encoding(syntax: UID) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the data set; compressed syntaxes are explicit VR LE."""
    if syntax.is_transfer_syntax:
        return syntax.is_implicit_VR, syntax.is_little_endian
    return False, True


def _at_pixel_data(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return tag.group >= _PIXEL_DATA_GROUP


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # long form: 2 reserved bytes, 4-byte length
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str, limit: int) -> bytes:
    raw = value[:limit].encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw

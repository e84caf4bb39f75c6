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
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

__all__ = ["PREAMBLE", "file_meta_information", "read_header"]

#: The 128-byte preamble (all zero) and the DICOM prefix.
PREAMBLE = bytes(128) + b"DICM"

_PIXEL_DATA_GROUP = 0x7FE0


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

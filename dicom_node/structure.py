"""The structure of a received data set, checked before it is acknowledged.

:func:`check_structure` walks the encoded data set once, from its first byte
to its last, without converting a single value: every element's length must
stay inside the data set (or the item or sequence holding it), every
sequence and item of undefined length must end with its delimitation item,
and encapsulated Pixel Data must be a well-formed run of fragments ended by a
Sequence Delimitation Item (PS3.5 §7.1, §7.5, Annex A.4). For the native
transfer syntaxes the Pixel Data must also hold every frame the Image Pixel
module declares: Rows × Columns × Samples per Pixel × Number of Frames ×
Bits Allocated / 8 bytes (PS3.5 §8.1.1, §8.2; PS3.3 C.7.6.3).

Walking costs microseconds per element and nothing per pixel; only a
deflated data set (PS3.5 A.5) is inflated first, in full, since that is how
its elements become visible.

Errors: :class:`~dicom_node.errors.DataSetStructureError` when the bytes
cannot be parsed into elements (the SCP answers *Cannot understand*),
:class:`~dicom_node.errors.PixelDataLengthError` when they can but the Pixel
Data does not hold the image its attributes describe (*Data Set does not match
SOP Class*). Messages name the element and the offset from the start of the
data set (of the inflated data set when deflated).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom.datadict import DicomDictionary
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicom_node.errors import DataSetStructureError, PixelDataLengthError

__all__ = ["MAX_INFLATED_BYTES", "MAX_SEQUENCE_DEPTH", "DataSetStructure", "check_structure"]

Buffer = bytes | bytearray | memoryview

#: Sequences nested deeper than this are refused (the walk recurses per level).
MAX_SEQUENCE_DEPTH = 100

#: A deflated data set that inflates to more than this is refused.
MAX_INFLATED_BYTES = 1 << 31

#: Transfer syntaxes whose Pixel Data is native (PS3.5 §8.1.1); all others encapsulate it.
NATIVE_TRANSFER_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
)

_UNDEFINED = 0xFFFFFFFF
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
# Explicit VRs with a 2-byte length (PS3.5 Table 7.1-2).
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
     b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
# Tags whose VR is SQ: in Implicit VR a defined-length sequence is known only by its tag.
_SEQUENCE_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")

_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = 0x7FE00008
_DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_PIXEL_DATA_TAGS = frozenset({_PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_FLOAT_PIXEL_DATA})

# Image Pixel module attributes the Pixel Data length depends on (PS3.3 C.7.6.3).
_SAMPLES_PER_PIXEL = 0x00280002
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100
_IMAGE_ATTRIBUTES = frozenset(
    {_SAMPLES_PER_PIXEL, _PHOTOMETRIC_INTERPRETATION, _NUMBER_OF_FRAMES, _ROWS, _COLUMNS, _BITS_ALLOCATED}
)
# Top-level elements the walk remembers.
_WATCHED = _IMAGE_ATTRIBUTES | _PIXEL_DATA_TAGS


class _Encoding:
    """How elements are laid out (Implicit or Explicit VR, byte order), as prepared structs."""

    __slots__ = ("explicit_header", "implicit", "long_length", "tag_and_length", "unsigned_short")

    def __init__(self, *, implicit: bool, little_endian: bool) -> None:
        order = "<" if little_endian else ">"
        self.implicit = implicit
        self.tag_and_length = struct.Struct(order + "HHI")
        self.explicit_header = struct.Struct(order + "HH2sH")
        self.long_length = struct.Struct(order + "I")
        self.unsigned_short = struct.Struct(order + "H")


_IMPLICIT_LE = _Encoding(implicit=True, little_endian=True)
_EXPLICIT_LE = _Encoding(implicit=False, little_endian=True)
_EXPLICIT_BE = _Encoding(implicit=False, little_endian=False)


@dataclass(frozen=True)
class DataSetStructure:
    """What the walk found in a well-formed data set.

    Attributes
    ----------
    elements
        Data elements walked, nested ones included.
    pixel_data_length
        Bytes of native top-level Pixel Data, or None (absent or encapsulated).
    fragments
        Fragments of encapsulated top-level Pixel Data, Basic Offset Table
        excluded, or None (absent or native).
    inflated
        The inflated data set when the transfer syntax is Deflated Explicit VR
        Little Endian (PS3.5 A.5), so that nobody inflates it twice; else None.
    """

    elements: int
    pixel_data_length: int | None
    fragments: int | None
    inflated: bytes | None = None


def check_structure(data: Buffer, transfer_syntax_uid: str) -> DataSetStructure:
    """Walk the encoded data set ``data`` and check that it is whole.

    Parameters
    ----------
    data
        The data set as received (after the File Meta Information, if any).
    transfer_syntax_uid
        The transfer syntax it is encoded in (the presentation context's).

    Returns
    -------
    DataSetStructure
        Counts found on the way (and the inflated bytes of a deflated data set).

    Raises
    ------
    DataSetStructureError
        A length runs past its data set, item or sequence; a delimiter is
        missing or misplaced; an explicit VR is not a VR; the deflate stream
        is incomplete (PS3.5 §7.1, §7.5, A.4, A.5).
    PixelDataLengthError
        Native Pixel Data is shorter than the image its attributes describe,
        or Pixel Data is native where it must be encapsulated or vice versa.
    """
    inflated = None
    if transfer_syntax_uid == ImplicitVRLittleEndian:
        encoding = _IMPLICIT_LE
    elif transfer_syntax_uid == ExplicitVRBigEndian:
        encoding = _EXPLICIT_BE
    else:
        encoding = _EXPLICIT_LE
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        inflated = _inflate(data)
        data = inflated
    walker = _Walker(memoryview(data).cast("B"))
    try:
        walker.dataset(0, len(walker.buffer), 0, encoding, delimited=False)
    finally:
        walker.buffer.release()
    native = transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES
    if walker.pixel_data_tag is not None:
        _check_pixel_data(walker, encoding, native=native)
    return DataSetStructure(
        elements=walker.elements,
        pixel_data_length=walker.pixel_data_length,
        fragments=walker.fragments,
        inflated=inflated,
    )


def _inflate(data: Buffer) -> bytes:
    """The inflated data set; the deflate stream (RFC 1951, no header) must be complete."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise DataSetStructureError(f"deflate stream is corrupt ({exc})", offset=0) from None
    if inflater.unconsumed_tail:
        raise DataSetStructureError(f"deflated data set inflates to more than {MAX_INFLATED_BYTES} bytes", offset=0)
    if not inflater.eof:
        raise DataSetStructureError("deflate stream ends before its last block (truncated)", offset=len(data))
    if len(inflater.unused_data) > 1:  # one byte of padding to an even length is allowed
        raise DataSetStructureError(f"{len(inflater.unused_data)} bytes follow the deflate stream", offset=len(data))
    return inflated


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walker:
    """One walk over a data set's elements (recursion per sequence level)."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.elements = 0
        #: Top-level Image Pixel attributes: tag -> raw value (copied).
        self.image: dict[int, bytes] = {}
        self.pixel_data_tag: int | None = None
        self.pixel_data_length: int | None = None
        self.fragments: int | None = None
        self.pixel_data_offset = 0

    def dataset(self, position: int, end: int, depth: int, encoding: _Encoding, *, delimited: bool) -> int:
        """Walk the elements from ``position`` up to ``end`` (or, when ``delimited``,
        up to the Item Delimitation Item); returns the position after them."""
        buffer = self.buffer
        # One unpack per element: Explicit VR reads tag, VR and short length at once.
        header = (encoding.tag_and_length if encoding.implicit else encoding.explicit_header).unpack_from
        long_length = encoding.long_length.unpack_from
        implicit = encoding.implicit
        start = position
        elements = 0
        while position < end:
            if end - position < 8:
                raise DataSetStructureError(
                    f"{end - position} stray bytes at byte {position}, too few for an element", offset=position
                )
            if implicit:
                group, element, length = header(buffer, position)
                vr = b""
                value = position + 8
            else:
                group, element, vr, length = header(buffer, position)
            if group == 0xFFFE:  # delimiters and items carry no VR, in any encoding
                tag = group << 16 | element
                if tag == _ITEM_DELIMITATION and delimited:
                    self.elements += elements
                    return position + 8
                raise DataSetStructureError(
                    f"{_tag(tag)} at byte {position}: item or delimiter outside a sequence", offset=position
                )
            if not implicit:
                if vr in _LONG_VRS:
                    if end - position < 12:
                        raise DataSetStructureError(
                            f"{_tag(group << 16 | element)} at byte {position}: element header cut off",
                            offset=position,
                        )
                    (length,) = long_length(buffer, position + 8)
                    value = position + 12
                elif vr in _SHORT_VRS:
                    value = position + 8
                else:
                    raise DataSetStructureError(
                        f"{_tag(group << 16 | element)} at byte {position}: {vr!r} is not a VR", offset=position
                    )
            tag = group << 16 | element
            elements += 1
            if length == _UNDEFINED:
                position = self._undefined_length(tag, vr, value, end, depth, encoding, position)
                continue
            following = value + length
            if following > end:
                raise DataSetStructureError(
                    f"{_tag(tag)} at byte {position}: length {length} runs past the end ({end})",
                    offset=position,
                )
            if vr == b"SQ" or (implicit and tag in _SEQUENCE_TAGS):
                self.sequence(value, following, depth + 1, encoding, delimited=False)
            elif depth == 0 and tag in _WATCHED:
                if tag in _PIXEL_DATA_TAGS:
                    self.pixel_data_tag, self.pixel_data_length = tag, length
                    self.pixel_data_offset = position
                else:
                    self.image[tag] = bytes(buffer[value:following])
            position = following
        if delimited:
            raise DataSetStructureError(
                f"item at byte {start - 8}: no Item Delimitation before the end ({end})", offset=start - 8
            )
        self.elements += elements
        return position

    def _undefined_length(
        self, tag: int, vr: bytes, value: int, end: int, depth: int, encoding: _Encoding, position: int
    ) -> int:
        """Walk an element of undefined length; returns the position after its delimiter."""
        if tag in _PIXEL_DATA_TAGS or vr in (b"OB", b"OW"):
            return self.fragment_run(tag, value, end, position, top_level=depth == 0)
        if vr == b"UN":  # a sequence in Implicit VR Little Endian (PS3.5 §6.2.2)
            return self.sequence(value, end, depth + 1, _IMPLICIT_LE, delimited=True)
        if vr in (b"SQ", b""):
            return self.sequence(value, end, depth + 1, encoding, delimited=True)
        raise DataSetStructureError(
            f"{_tag(tag)} at byte {position}: undefined length with VR {vr.decode('ascii')}",
            offset=position,
        )

    def sequence(self, position: int, end: int, depth: int, encoding: _Encoding, *, delimited: bool) -> int:
        """Walk the items of a sequence from ``position`` up to ``end`` (or, when
        ``delimited``, its Sequence Delimitation Item); returns the position after."""
        if depth > MAX_SEQUENCE_DEPTH:
            raise DataSetStructureError(
                f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} at byte {position}", offset=position
            )
        buffer = self.buffer
        tag_and_length = encoding.tag_and_length.unpack_from
        start = position
        while end - position >= 8:
            group, element, length = tag_and_length(buffer, position)
            tag = group << 16 | element
            if tag == _ITEM:
                if length == _UNDEFINED:
                    position = self.dataset(position + 8, end, depth, encoding, delimited=True)
                    continue
                following = position + 8 + length
                if following > end:
                    raise DataSetStructureError(
                        f"item at byte {position}: length {length} runs past its sequence's end ({end})",
                        offset=position,
                    )
                self.dataset(position + 8, following, depth, encoding, delimited=False)
                position = following
            elif tag == _SEQUENCE_DELIMITATION and delimited:
                return position + 8
            else:
                raise DataSetStructureError(
                    f"{_tag(tag)} at byte {position} where a sequence item must be", offset=position
                )
        if delimited:
            raise DataSetStructureError(
                f"sequence at byte {start}: no Sequence Delimitation before the end ({end})", offset=start
            )
        if position != end:
            raise DataSetStructureError(
                f"{end - position} stray bytes at byte {position} in a sequence", offset=position
            )
        return position

    def fragment_run(self, tag: int, position: int, end: int, element_offset: int, *, top_level: bool) -> int:
        """Walk encapsulated Pixel Data: items of defined length (the Basic Offset
        Table, then fragments) up to a Sequence Delimitation Item (PS3.5 A.4)."""
        buffer = self.buffer
        # Items and delimiters inside encapsulated Pixel Data are Little Endian.
        tag_and_length = _EXPLICIT_LE.tag_and_length.unpack_from
        items = 0
        while end - position >= 8:
            group, element, length = tag_and_length(buffer, position)
            item_tag = group << 16 | element
            if item_tag == _SEQUENCE_DELIMITATION:
                if top_level:
                    self.pixel_data_tag, self.fragments = tag, max(items - 1, 0)
                    self.pixel_data_offset = element_offset
                return position + 8
            if item_tag != _ITEM or length == _UNDEFINED:
                raise DataSetStructureError(
                    f"{_tag(item_tag)} at byte {position} where a {_tag(tag)} fragment must be",
                    offset=position,
                )
            if position + 8 + length > end:
                raise DataSetStructureError(
                    f"{_tag(tag)} fragment at byte {position}: length {length} runs past the end ({end})",
                    offset=position,
                )
            position += 8 + length
            items += 1
        raise DataSetStructureError(
            f"{_tag(tag)} at byte {element_offset}: fragments lack a Sequence Delimitation",
            offset=element_offset,
        )


def _check_pixel_data(walker: _Walker, encoding: _Encoding, *, native: bool) -> None:
    """Native Pixel Data must hold every frame the Image Pixel module declares;
    encapsulated Pixel Data at least one fragment per frame (PS3.5 §8.2, A.4)."""
    tag = walker.pixel_data_tag
    assert tag is not None
    at = walker.pixel_data_offset
    if native and walker.pixel_data_length is None:
        raise PixelDataLengthError(f"{_tag(tag)} is encapsulated but the transfer syntax is native", offset=at)
    if not native and tag == _PIXEL_DATA and walker.fragments is None:
        raise PixelDataLengthError(f"{_tag(tag)} is native but the transfer syntax encapsulates it", offset=at)
    frames = _number_of_frames(walker.image.get(_NUMBER_OF_FRAMES), at)
    if not native:
        if walker.fragments is not None and walker.fragments < frames:
            raise PixelDataLengthError(
                f"{_tag(tag)} has {walker.fragments} fragments for {frames} frames", offset=at
            )
        return
    rows = _unsigned_short(walker.image.get(_ROWS), "Rows", encoding, at)
    columns = _unsigned_short(walker.image.get(_COLUMNS), "Columns", encoding, at)
    bits = _unsigned_short(walker.image.get(_BITS_ALLOCATED), "Bits Allocated", encoding, at)
    raw_samples = walker.image.get(_SAMPLES_PER_PIXEL)
    samples = 1 if raw_samples is None else _unsigned_short(raw_samples, "Samples per Pixel", encoding, at)
    expected = (rows * columns * samples * frames * bits + 7) // 8
    photometric = walker.image.get(_PHOTOMETRIC_INTERPRETATION, b"").strip(b" \x00")
    if photometric == b"YBR_FULL_422":  # two chroma samples per two pixels (PS3.3 C.7.6.3.1.2)
        expected = expected // 3 * 2
    actual = walker.pixel_data_length
    assert actual is not None
    if actual < expected:
        raise PixelDataLengthError(
            f"{_tag(tag)} has {actual} bytes; {rows}x{columns}x{samples}x{frames} at {bits} bits "
            f"needs {expected}",
            offset=at,
        )


def _unsigned_short(raw: bytes | None, name: str, encoding: _Encoding, at: int) -> int:
    if raw is None:
        raise PixelDataLengthError(f"Pixel Data without {name}", offset=at)
    if len(raw) != 2:
        raise PixelDataLengthError(f"{name} is {len(raw)} bytes long, not one US value", offset=at)
    return int(encoding.unsigned_short.unpack(raw)[0])


def _number_of_frames(raw: bytes | None, at: int) -> int:
    """Number of Frames (IS); absent or 0 means one frame, as pydicom reads it."""
    if raw is None:
        return 1
    text = raw.strip(b" \x00")
    if not text:
        return 1
    try:
        frames = int(text)
    except ValueError:
        raise PixelDataLengthError("Number of Frames is not an integer", offset=at) from None
    if frames < 0:
        raise PixelDataLengthError(f"Number of Frames is {frames}", offset=at)
    return max(frames, 1)

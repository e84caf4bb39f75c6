"""The structural check of received data sets (PS3.5 §7, §8, A.4, A.5): valid data
of every transfer syntax passes, each kind of damage is named with its place."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from dicom_node.errors import DataSetStructureError, PixelDataLengthError
from dicom_node.structure import MAX_SEQUENCE_DEPTH, check_structure
from tests.damaged import DAMAGE_KINDS, dataset_offset, intact_ct, write_damaged
from tests.factories import make_ct

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)


def data_set_of(path: Path) -> tuple[bytes, str]:
    """The encoded data set of a Part 10 file and its transfer syntax."""
    raw = path.read_bytes()
    syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return raw[dataset_offset(raw):], syntax


def encode(dataset: Dataset, syntax: str) -> bytes:
    """``dataset`` encoded in a native transfer syntax, as a sender puts it on the wire."""
    stream = DicomBytesIO()
    stream.is_implicit_VR = syntax == ImplicitVRLittleEndian
    stream.is_little_endian = syntax != ExplicitVRBigEndian
    write_dataset(stream, dataset)
    body = stream.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = deflater.compress(body) + deflater.flush()
    return body


def new_ct(**kwargs) -> Dataset:
    return make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid(), **kwargs)


# -- valid data is never refused ---------------------------------------------------------


def shared_files() -> list[Path]:
    """shared/data/dicom beside the repository, resolved as tests/conftest.py resolves it."""
    root = (Path(__file__).resolve().parents[3].parent / "shared" / "data" / "dicom").resolve()
    return sorted(root.glob("*.dcm"))


def test_the_real_files_are_found(shared_data):
    """The parametrised test below would be silently empty without them."""
    assert len(shared_files()) >= 19 and all(p.parent == shared_data / "dicom" for p in shared_files())


@pytest.mark.parametrize("path", shared_files(), ids=lambda p: p.name)
def test_every_real_file_passes(path):
    """Every file in shared/data/dicom, whatever its transfer syntax (JPEG, JPEG-LS, J2K,
    RLE, big endian, deflated frames, UN elements, overlays, LUT sequences, multi-frame)."""
    data, syntax = data_set_of(path)
    structure = check_structure(data, syntax)
    source = dcmread(path)
    assert structure.elements >= len(source)
    if str(source.file_meta.TransferSyntaxUID) not in NATIVE:
        assert structure.fragments is not None and structure.fragments >= int(source.get("NumberOfFrames") or 1)
    else:
        assert structure.pixel_data_length == len(source.PixelData)


@pytest.mark.parametrize("syntax", NATIVE)
def test_nested_sequences_of_both_length_kinds_pass_in_every_native_syntax(syntax):
    dataset = intact_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid())
    structure = check_structure(encode(dataset, syntax), syntax)
    assert structure.pixel_data_length == 64 * 64 * 2
    # 6 elements in the two nested sequences before Pixel Data, 3 in the private ones after it
    assert structure.elements == sum(1 for _ in dataset.iterall())
    assert (structure.inflated is not None) == (syntax == DeflatedExplicitVRLittleEndian)


@pytest.mark.parametrize("option,syntax", [("+ti", ImplicitVRLittleEndian), ("+tb", ExplicitVRBigEndian),
                                           ("+td", DeflatedExplicitVRLittleEndian), ("+te", ExplicitVRLittleEndian)])
@pytest.mark.parametrize("name", ["MR-SIEMENS-DICOM-WithOverlays.dcm", "SC_rgb.dcm", "vlut_04.dcm",
                                  "mlut_18.dcm", "emri_small_big_endian.dcm"])
def test_real_files_reencoded_by_dcmtk_pass(name, option, syntax, tmp_path):
    """dcmtk's own encoder (dcmconv) writes each native transfer syntax, deflated included."""
    dcmconv = shutil.which("dcmconv")
    if dcmconv is None:
        pytest.fail("dcmconv not found: .ci/bootstrap --test installs dcmtk")
    source = shared_files()[0].parent / name
    converted = tmp_path / name
    subprocess.run([dcmconv, option, str(source), str(converted)], check=True, capture_output=True)
    data, written_syntax = data_set_of(converted)
    assert written_syntax == syntax
    structure = check_structure(data, syntax)
    assert structure.pixel_data_length == len(dcmread(source).PixelData)


def test_pixel_data_longer_than_the_image_and_odd_length_padding_pass():
    ct = new_ct(rows=3, columns=3)
    ct.BitsAllocated, ct.BitsStored, ct.HighBit = 8, 8, 7
    ct.PixelData = bytes(10)  # 9 bytes padded to an even length
    assert check_structure(encode(ct, ExplicitVRLittleEndian), ExplicitVRLittleEndian).pixel_data_length == 10
    ct.PixelData = bytes(20)  # more than the image needs: readers ignore the excess
    assert check_structure(encode(ct, ExplicitVRLittleEndian), ExplicitVRLittleEndian).pixel_data_length == 20


def test_bit_packed_one_bit_pixel_data_is_counted_in_bits():
    ct = new_ct(rows=5, columns=5)  # 25 bits: 4 bytes
    ct.BitsAllocated, ct.BitsStored, ct.HighBit = 1, 1, 0
    ct.PixelData = bytes(4)
    check_structure(encode(ct, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    ct.PixelData = bytes(2)
    with pytest.raises(PixelDataLengthError, match="5x5x1x1 at 1 bits needs 4"):
        check_structure(encode(ct, ExplicitVRLittleEndian), ExplicitVRLittleEndian)


def test_ybr_full_422_native_pixel_data_holds_two_thirds():
    ct = new_ct(rows=4, columns=4)
    ct.SamplesPerPixel, ct.PhotometricInterpretation, ct.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ct.BitsAllocated, ct.BitsStored, ct.HighBit = 8, 8, 7
    ct.PixelData = bytes(4 * 4 * 2)
    check_structure(encode(ct, ExplicitVRLittleEndian), ExplicitVRLittleEndian)


def test_a_data_set_without_pixel_data_passes():
    report = Dataset()
    report.SOPInstanceUID = generate_uid()
    report.ContentSequence = [Dataset()]
    report.ContentSequence[0].TextValue = "no pixels"
    structure = check_structure(encode(report, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert structure.pixel_data_length is None and structure.fragments is None


# -- damage is refused with what and where ---------------------------------------------------


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_each_kind_of_damage_is_a_structure_error(kind, tmp_path):
    path = write_damaged(kind, tmp_path / "x.dcm", study_instance_uid=generate_uid(),
                         series_instance_uid=generate_uid())
    data, syntax = data_set_of(path)
    expected = {
        "truncated-pixel-data": r"\(7FE0,0010\) at byte \d+: length 8192 runs past the end",
        "length-past-end": r"\(7FE0,0010\) at byte \d+: length 12288 runs past the end",
        "huge-length": r"\(0029,1010\) at byte \d+: length 4294967280 runs past the end",
        "unterminated-sequences": r"item at byte \d+: no Item Delimitation before the end",
    }[kind]
    with pytest.raises(DataSetStructureError, match=expected) as raised:
        check_structure(data, syntax)
    assert 0 <= raised.value.offset < len(data)


@pytest.mark.parametrize("syntax", NATIVE)
def test_truncation_anywhere_is_caught_in_every_native_syntax(syntax):
    """Cut at every 97th byte: a cut inside an element is always caught (only a cut exactly
    between two top-level elements before Pixel Data can look whole)."""
    dataset = intact_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid())
    whole = encode(dataset, ExplicitVRLittleEndian if syntax == DeflatedExplicitVRLittleEndian else syntax)
    for cut in range(1, len(whole), 97):
        body = whole[:cut]
        if syntax == DeflatedExplicitVRLittleEndian:
            deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = deflater.compress(body) + deflater.flush()
        try:
            structure = check_structure(body, syntax)
        except (DataSetStructureError, PixelDataLengthError):
            continue
        assert structure.pixel_data_length is None, f"cut at {cut} passed"


def test_a_truncated_deflate_stream_is_refused():
    body = encode(new_ct(rows=16, columns=16), DeflatedExplicitVRLittleEndian)
    with pytest.raises(DataSetStructureError, match="deflate stream ends before its last block"):
        check_structure(body[: len(body) // 2], DeflatedExplicitVRLittleEndian)
    with pytest.raises(DataSetStructureError, match="deflate stream is corrupt"):
        check_structure(b"\xff" * 64, DeflatedExplicitVRLittleEndian)


def test_native_pixel_data_short_of_its_frames_is_refused():
    ct = new_ct(rows=8, columns=8)
    ct.NumberOfFrames = 3
    ct.PixelData = bytes(8 * 8 * 2 * 2)  # two frames of three
    with pytest.raises(PixelDataLengthError, match=r"has 256 bytes; 8x8x1x3 at 16 bits needs 384"):
        check_structure(encode(ct, ImplicitVRLittleEndian), ImplicitVRLittleEndian)


def test_pixel_data_without_rows_is_refused():
    ct = new_ct(rows=4, columns=4)
    del ct.Rows
    with pytest.raises(PixelDataLengthError, match="Pixel Data without Rows"):
        check_structure(encode(ct, ExplicitVRLittleEndian), ExplicitVRLittleEndian)


def encapsulated(fragments: list[bytes], *, delimited: bool = True) -> bytes:
    """Encapsulated Pixel Data (PS3.5 A.4): empty Basic Offset Table, fragments, delimiter."""
    value = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    for fragment in fragments:
        value += struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment
    if delimited:
        value += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + value


def header_without_pixels(frames: int) -> bytes:
    ct = new_ct(rows=8, columns=8)
    ct.NumberOfFrames = frames
    del ct.PixelData
    return encode(ct, ExplicitVRLittleEndian)


def test_encapsulated_pixel_data_needs_a_fragment_per_frame_and_its_delimiter():
    check_structure(header_without_pixels(2) + encapsulated([b"ab", b"cd"]), RLELossless)
    with pytest.raises(PixelDataLengthError, match="has 1 fragments for 2 frames"):
        check_structure(header_without_pixels(2) + encapsulated([b"ab"]), RLELossless)
    with pytest.raises(DataSetStructureError, match="fragments lack a Sequence Delimitation"):
        check_structure(header_without_pixels(1) + encapsulated([b"ab"], delimited=False), RLELossless)
    cut = header_without_pixels(1) + encapsulated([b"abcdef"])
    with pytest.raises(DataSetStructureError, match="fragment at byte \\d+: length 6 runs past the end"):
        check_structure(cut[:-12], RLELossless)


def test_pixel_data_must_be_encapsulated_exactly_when_the_syntax_says_so():
    native = encode(new_ct(rows=4, columns=4), ExplicitVRLittleEndian)
    with pytest.raises(PixelDataLengthError, match="native but the transfer syntax encapsulates it"):
        check_structure(native, RLELossless)
    with pytest.raises(PixelDataLengthError, match="encapsulated but the transfer syntax is native"):
        check_structure(header_without_pixels(1) + encapsulated([b"ab"]), ExplicitVRLittleEndian)


def test_a_defined_length_sequence_in_implicit_vr_is_walked_by_its_tag():
    """Implicit VR has no VR on the wire: a known SQ tag's items are checked all the same."""
    dataset = new_ct(rows=2, columns=2)
    dataset.ReferencedImageSequence = [Dataset()]
    dataset.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    body = bytearray(encode(dataset, ImplicitVRLittleEndian))
    item = body.index(b"\xfe\xff\x00\xe0")
    struct.pack_into("<I", body, item + 4, struct.unpack_from("<I", body, item + 4)[0] + 2)
    with pytest.raises(DataSetStructureError, match="item at byte \\d+: length \\d+ runs past its sequence's end"):
        check_structure(bytes(body), ImplicitVRLittleEndian)


def test_a_vr_that_is_not_one_is_refused():
    body = bytearray(encode(new_ct(rows=2, columns=2), ExplicitVRLittleEndian))
    body[4:6] = b"\x01\x02"
    with pytest.raises(DataSetStructureError, match=r"\(0008,0005\) at byte 0: b'\\x01\\x02' is not a VR"):
        check_structure(bytes(body), ExplicitVRLittleEndian)


def test_stray_bytes_after_the_last_element_are_refused():
    body = encode(new_ct(rows=2, columns=2), ExplicitVRLittleEndian)
    with pytest.raises(DataSetStructureError, match="3 stray bytes at byte"):
        check_structure(body + b"\x00\x00\x00", ExplicitVRLittleEndian)


def test_absurdly_deep_nesting_is_refused_without_exhausting_the_stack():
    undefined_sequence = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    undefined_item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    body = (undefined_sequence + undefined_item) * (MAX_SEQUENCE_DEPTH + 5)
    with pytest.raises(DataSetStructureError, match=f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}"):
        check_structure(body, ExplicitVRLittleEndian)


def test_a_sequence_delimiter_left_over_at_the_top_level_is_refused():
    """What a sender that wrote one delimiter too many (or a defined-length sequence followed
    by its delimiter) produces."""
    body = encode(new_ct(rows=2, columns=2), ExplicitVRLittleEndian)
    stray = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    with pytest.raises(DataSetStructureError, match=r"\(FFFE,E0DD\) at byte 0: item or delimiter outside a sequence"):
        check_structure(stray + body, ExplicitVRLittleEndian)

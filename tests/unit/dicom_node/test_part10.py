"""Part 10 files built from received data sets: hand-encoded file meta, lazily read header."""

from __future__ import annotations

import io
import zlib

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from dicom_node.part10 import PREAMBLE, file_meta_information, read_header
from tests.factories import make_ct

IMPLEMENTATION = "1.2.826.0.1.3680043.9.3811.3.0.4"  # odd length: padded with NUL


def encoded(dataset, *, implicit: bool) -> bytes:
    stream = DicomBytesIO()
    stream.is_implicit_VR, stream.is_little_endian = implicit, True
    write_dataset(stream, dataset)
    return stream.getvalue()


@pytest.mark.parametrize("source_ae", ["STORESCU", "ODD", ""])
def test_file_meta_is_byte_identical_to_pydicoms_encoding(source_ae):
    sop_instance = generate_uid()
    ours = file_meta_information(
        media_storage_sop_class_uid=CTImageStorage,
        media_storage_sop_instance_uid=sop_instance,
        transfer_syntax_uid=JPEGBaseline8Bit,
        implementation_class_uid=IMPLEMENTATION,
        implementation_version_name="PYNETDICOM_304",
        source_application_entity_title=source_ae,
    )
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = IMPLEMENTATION
    meta.ImplementationVersionName = "PYNETDICOM_304"
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    reference = DicomBytesIO()
    reference.is_implicit_VR, reference.is_little_endian = False, True
    write_file_meta_info(reference, meta, enforce_standard=True)
    assert ours == reference.getvalue()


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_a_file_from_preamble_meta_and_data_set_reads_back(syntax, tmp_path):
    dataset = make_ct(
        study_instance_uid=generate_uid(), series_instance_uid=generate_uid(), rows=8, columns=8
    )
    body = encoded(dataset, implicit=syntax == ImplicitVRLittleEndian)
    if syntax == DeflatedExplicitVRLittleEndian:
        deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = deflater.compress(body) + deflater.flush()
    meta = file_meta_information(
        media_storage_sop_class_uid=dataset.SOPClassUID,
        media_storage_sop_instance_uid=dataset.SOPInstanceUID,
        transfer_syntax_uid=syntax,
        implementation_class_uid=IMPLEMENTATION,
    )
    path = tmp_path / "x.dcm"
    path.write_bytes(PREAMBLE + meta + body)
    back = dcmread(path)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.SOPInstanceUID == dataset.SOPInstanceUID
    assert back.PixelData == dataset.PixelData

    header = read_header(io.BytesIO(body), syntax)
    assert header.StudyInstanceUID == dataset.StudyInstanceUID
    assert "PixelData" not in header  # stops before the bulk data


def test_a_truncated_data_set_does_not_read_as_a_header():
    body = encoded(
        make_ct(
            study_instance_uid=generate_uid(), series_instance_uid=generate_uid(), rows=8, columns=8
        ),
        implicit=False,
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever pydicom raises; the SCP answers Cannot Understand
        header = read_header(io.BytesIO(body[:37]), ExplicitVRLittleEndian)
        str(header.StudyInstanceUID)

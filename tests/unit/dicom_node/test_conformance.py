from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
)
from pynetdicom.presentation import build_context

from dicom_node.conformance import (
    ACCEPTED_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    contexts_preferring_requestor,
)


def test_all_storage_classes_and_compressed_syntaxes_are_accepted():
    assert CTImageStorage in STORAGE_SOP_CLASSES
    assert "1.2.840.10008.5.1.4.1.1.88.34" in STORAGE_SOP_CLASSES  # Comprehensive 3D SR
    for syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                   "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
                   "1.2.840.10008.1.2.1.99"):
        assert syntax in ACCEPTED_TRANSFER_SYNTAXES


def test_requestor_order_decides_the_transfer_syntax():
    requested = [
        build_context(CTImageStorage, [JPEGLosslessSV1, ExplicitVRLittleEndian]),
        build_context(CTImageStorage, [ImplicitVRLittleEndian]),
        build_context("1.2.3.4.5.6.7", [ExplicitVRLittleEndian]),  # unknown SOP class: not offered
        build_context(CTImageStorage, ["1.2.3.999"]),  # unknown transfer syntax: ignored
    ]
    contexts = contexts_preferring_requestor(requested)
    assert [str(c.abstract_syntax) for c in contexts] == [CTImageStorage]
    assert contexts[0].transfer_syntax == [
        JPEGLosslessSV1,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    ]
    assert JPEGBaseline8Bit not in contexts[0].transfer_syntax

"""One ingest path for every received instance: C-STORE and STOW-RS alike.

:class:`InstanceIngest` takes an encoded data set (the bytes after the File
Meta Information, as a C-STORE request carries them) with the identifying
UIDs its transport named, and does what storing it takes, in order:

1. refuse a SOP Class or Transfer Syntax the node does not accept
   (:mod:`dicom_node.conformance`; C-STORE negotiation already did);
2. stage the Part 10 file (our File Meta Information, then the received
   bytes unchanged) and start its fsync (:meth:`InstanceStore.stage`);
3. check the data set's structure (:func:`~dicom_node.structure.check_structure`);
4. read the header up to Pixel Data and check its UIDs against the transport's;
5. place the file by the duplicate policy (:meth:`StagedWrite.place`);
6. tell the ``on_stored`` hook (the study index), then wait until the file is
   durable.

Each refusal is one :class:`~dicom_node.conformance.StoreStatus` with a reason,
returned in an :class:`IngestResult` (never raised): the Storage SCP answers it
as the C-STORE status with an ErrorComment, STOW-RS as the Failure Reason of
the instance (PS3.18 Annex I). Nothing of a refused instance stays in storage.
"""

from __future__ import annotations

import io
import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, cast

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from dicom_node import metrics
from dicom_node.conformance import ACCEPTED_TRANSFER_SYNTAXES, STORAGE_SOP_CLASSES, StoreStatus
from dicom_node.errors import (
    DataSetStructureError,
    DuplicateInstanceError,
    InstanceConflictError,
    InvalidInstanceError,
    PixelDataLengthError,
    StorageError,
    StoreRefusedError,
)
from dicom_node.part10 import PREAMBLE, file_meta_information, read_header
from dicom_node.storage import InstanceStore, PendingWrite, StagedWrite, StoreOutcome
from dicom_node.structure import DataSetStructure, check_structure
from dicom_node.uids import is_valid_uid, short_uid

__all__ = ["IngestResult", "InstanceIngest", "StoredInstance"]

logger = logging.getLogger(__name__)

_ACCEPTED_TRANSFER_SYNTAXES = frozenset(str(uid) for uid in ACCEPTED_TRANSFER_SYNTAXES)
_STORAGE_SOP_CLASSES = frozenset(STORAGE_SOP_CLASSES)


@dataclass(frozen=True)
class StoredInstance:
    """A received instance written to storage, as told to the ``on_stored`` hook.

    ``header`` is the received data set up to Pixel Data (decoded lazily by
    pydicom). When the hook runs, the file may still be on its way to
    ``relative_path`` and stable storage: a hook that records the instance
    somewhere durable (the index) calls :meth:`wait_durable` before it commits,
    so that nothing refers to a file that a crash could still lose; the flush
    and the hook's work overlap.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    relative_path: str
    size: int
    outcome: StoreOutcome
    calling_ae_title: str
    peer_host: str
    received_at: datetime
    header: Dataset = field(compare=False, repr=False)
    #: The write still being moved into place and flushed, if any (see :meth:`wait_durable`).
    pending: PendingWrite | None = field(default=None, compare=False, repr=False)

    def wait_durable(self) -> None:
        """Block until the file is at ``relative_path`` and on stable storage (per the store's fsync
        policy).

        Raises :class:`~dicom_node.errors.StorageError` if it cannot be made durable.
        """
        if self.pending is not None:
            self.pending.wait()


@dataclass(frozen=True)
class IngestResult:
    """What became of one received instance.

    ``status`` is the C-STORE status (:class:`~dicom_node.conformance.StoreStatus`;
    PS3.4 Table B.2-1), ``reason`` why it was refused (``None`` on success).
    The Study and Series Instance UIDs, the stored file (relative to the
    storage root) and the store's outcome are known once the header was read
    and the file placed; ``None`` before.
    """

    status: int
    reason: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    relative_path: str | None = None
    outcome: StoreOutcome | None = None

    @property
    def stored(self) -> bool:
        """The instance is stored (and indexed, when there is a hook)."""
        return self.status == StoreStatus.SUCCESS


#: An encoded data set: bytes, a ``BytesIO`` (C-STORE's buffer) or a memory map (a spooled file).
EncodedDataSet = bytes | io.BytesIO | mmap.mmap


class InstanceIngest:
    """Stores, checks and indexes received instances (the one path for every transport).

    Parameters
    ----------
    store
        Where received instances are written.
    implementation_class_uid, implementation_version_name
        This node's, written into each file's File Meta Information (PS3.10 §7.1);
        pynetdicom's by default, as the Storage SCP's association says.
    on_stored
        Called after each instance is placed, before it is acknowledged; must be
        quick (an index insert). Raise
        :class:`~dicom_node.errors.StoreRefusedError` to refuse the instance: the
        file is removed again and the result is Out of Resources (transient) or
        Processing Failure; :class:`~dicom_node.errors.InstanceConflictError`
        (the SOP Instance UID is known in another study or series) gives 0xA900.
    verify_structure
        Check each data set's structure before Success; False only to measure
        what the check costs (``bench/ingest.py --structure-check``).
    """

    def __init__(
        self,
        store: InstanceStore,
        *,
        implementation_class_uid: str = PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version_name: str = PYNETDICOM_IMPLEMENTATION_VERSION,
        on_stored: Callable[[StoredInstance], None] | None = None,
        verify_structure: bool = True,
    ) -> None:
        self.store = store
        self.implementation_class_uid = implementation_class_uid
        self.implementation_version_name = implementation_version_name
        self.on_stored = on_stored
        self.verify_structure = verify_structure

    def ingest(
        self,
        data_set: EncodedDataSet,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae_title: str,
        peer_host: str,
        study_instance_uid: str | None = None,
    ) -> IngestResult:
        """Store one encoded data set (no File Meta Information) and tell the hook.

        ``data_set`` is read in place, never copied: a ``BytesIO`` through its
        buffer, a memory map directly. The UIDs are those the transport named
        (the C-STORE request and its presentation context, or a Part 10 file's
        File Meta Information); the data set's own must agree. ``calling_ae_title``
        goes into the file's Source Application Entity Title and, with
        ``peer_host``, to the hook. ``study_instance_uid``: the study the instance
        must belong to (STOW-RS ``/studies/{study}``, PS3.18 §10.5.1); an instance
        of another study is refused with 0xA900 before anything is placed.
        """
        received_at = datetime.now(UTC)
        token = short_uid(sop_instance_uid)
        if sop_class_uid not in _STORAGE_SOP_CLASSES:
            return _refused(
                StoreStatus.SOP_CLASS_NOT_SUPPORTED, "SOP Class not supported", calling_ae_title,
                token,
            )
        if transfer_syntax_uid not in _ACCEPTED_TRANSFER_SYNTAXES:
            return _refused(
                StoreStatus.TRANSFER_SYNTAX_NOT_SUPPORTED, "Transfer Syntax not supported",
                calling_ae_title, token,
            )
        stream = cast(
            BinaryIO,
            data_set if isinstance(data_set, io.BytesIO | mmap.mmap) else io.BytesIO(data_set),
        )
        file_meta = file_meta_information(
            media_storage_sop_class_uid=sop_class_uid,
            media_storage_sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            implementation_class_uid=self.implementation_class_uid,
            implementation_version_name=self.implementation_version_name,
            source_application_entity_title=calling_ae_title,
        )
        # Staged first, so that its fsync runs while the structure and header are read.
        try:
            with _buffer(stream) as view:
                staged = self.store.stage(
                    (PREAMBLE + file_meta, view), sop_instance_uid=sop_instance_uid
                )
                structure = (
                    _check_structure_or_discard(view, transfer_syntax_uid, staged)
                    if self.verify_structure else None
                )
        except InvalidInstanceError as exc:
            return _refused(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling_ae_title, token
            )
        except StorageError as exc:  # out of space, or the file system refused
            return _refused(StoreStatus.OUT_OF_RESOURCES, str(exc), calling_ae_title, token)
        except DataSetStructureError as exc:  # PS3.4 B.2.3: cannot be parsed into elements
            return _refused(StoreStatus.CANNOT_UNDERSTAND, str(exc), calling_ae_title, token)
        except PixelDataLengthError as exc:  # parsed, but not the image its attributes describe
            return _refused(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling_ae_title, token
            )
        if structure is not None and structure.inflated is not None:  # read what the check inflated
            stream, transfer_syntax_uid_read = (
                io.BytesIO(structure.inflated),
                str(ExplicitVRLittleEndian),
            )
        else:
            transfer_syntax_uid_read = transfer_syntax_uid
        try:
            header, study_uid, series_uid = _read_header_checked(
                stream, transfer_syntax_uid_read, sop_class_uid, sop_instance_uid
            )
            if study_instance_uid is not None and study_uid != study_instance_uid:
                raise _Refusal(
                    StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                    "Study Instance UID differs from the study stored to",
                )
            pending = staged.place(study_instance_uid=study_uid, series_instance_uid=series_uid)
        except _Refusal as refusal:
            staged.discard()
            return _refused(refusal.status, refusal.reason, calling_ae_title, token)
        except DuplicateInstanceError as exc:
            return _refused(
                StoreStatus.DUPLICATE_SOP_INSTANCE, str(exc), calling_ae_title, token
            )
        except InvalidInstanceError as exc:
            return _refused(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling_ae_title, token
            )
        except StorageError as exc:
            return _refused(StoreStatus.OUT_OF_RESOURCES, str(exc), calling_ae_title, token)
        result = pending.result
        located = {"study_instance_uid": study_uid, "series_instance_uid": series_uid}
        instance = StoredInstance(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            relative_path=result.relative_path,
            size=result.size,
            outcome=result.outcome,
            calling_ae_title=calling_ae_title,
            peer_host=peer_host,
            received_at=received_at,
            header=header,
            pending=pending,
        )
        try:
            if self.on_stored is not None:
                self.on_stored(instance)
            pending.wait()
        except DuplicateInstanceError as exc:  # policy reject: the index already has it
            return _refused(
                StoreStatus.DUPLICATE_SOP_INSTANCE, str(exc), calling_ae_title, token, **located
            )
        except StorageError as exc:  # the file could not be made durable (disk full, I/O error)
            return _refused(
                StoreStatus.OUT_OF_RESOURCES, str(exc), calling_ae_title, token, **located
            )
        except InstanceConflictError as exc:  # a known SOP Instance UID in another study or series
            pending.abandon()
            return _refused(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling_ae_title, token,
                **located,
            )
        except StoreRefusedError as exc:
            pending.abandon()
            status = (
                StoreStatus.OUT_OF_RESOURCES if exc.transient else StoreStatus.PROCESSING_FAILURE
            )
            return _refused(status, str(exc), calling_ae_title, token, **located)
        except BaseException:
            pending.abandon()
            raise
        logger.debug(
            "Stored instance %s from %r (%s)", token, calling_ae_title, result.outcome.value
        )
        metrics.instance_stored(calling_ae_title, result.size)
        return IngestResult(
            StoreStatus.SUCCESS,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            relative_path=result.relative_path,
            outcome=result.outcome,
        )


def _buffer(stream: BinaryIO) -> memoryview:
    """The bytes of a ``BytesIO`` or memory map, without a copy (release it when done)."""
    if isinstance(stream, io.BytesIO):
        return stream.getbuffer()
    return memoryview(stream)  # type: ignore[arg-type]  # mmap.mmap is a buffer


def _refused(
    status: int,
    reason: str,
    calling_ae_title: str,
    token: str,
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> IngestResult:
    logger.warning(
        "Refused instance %s from %r with status 0x%04X: %s",
        token, calling_ae_title, status, reason,
    )
    metrics.instance_refused(status)
    return IngestResult(
        status,
        reason,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
    )


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _check_structure_or_discard(
    data_set: memoryview, transfer_syntax_uid: str, staged: StagedWrite
) -> DataSetStructure:
    """The structure of the received data set (:func:`~dicom_node.structure.check_structure`);
    a damaged one's staged file is discarded before the error propagates."""
    try:
        return check_structure(data_set, transfer_syntax_uid)
    except BaseException:
        staged.discard()
        raise


def _read_header_checked(
    data_set: BinaryIO, transfer_syntax_uid: str, sop_class_uid: str, sop_instance_uid: str
) -> tuple[Dataset, str, str]:
    """The header, Study and Series Instance UIDs of a received data set that agrees
    with the UIDs its transport named; raises :class:`_Refusal` with the status to answer."""
    try:
        header = read_header(data_set, transfer_syntax_uid)
        study_uid = _uid_attribute(header, "StudyInstanceUID")
        series_uid = _uid_attribute(header, "SeriesInstanceUID")
        dataset_sop_instance = _uid_attribute(header, "SOPInstanceUID")
        dataset_sop_class = _uid_attribute(header, "SOPClassUID")
    except InvalidInstanceError as exc:
        raise _Refusal(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "cannot understand"
        raise _Refusal(
            StoreStatus.CANNOT_UNDERSTAND, f"data set could not be parsed ({type(exc).__name__})"
        ) from None
    if dataset_sop_instance != sop_instance_uid or dataset_sop_class != sop_class_uid:
        raise _Refusal(
            StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "SOP Class/Instance UID in the data set differ from the request",
        )
    return header, study_uid, series_uid


def _uid_attribute(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None or str(value) == "":
        raise InvalidInstanceError(f"{keyword} is missing")
    value = str(value)
    if not is_valid_uid(value):
        raise InvalidInstanceError(f"{keyword} is not a valid DICOM UID")
    return value

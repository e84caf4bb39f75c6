"""The STOW-RS response: the Store Instances Response Module (PS3.18 Annex I) and HTTP status.

Each instance's outcome is the C-STORE status the node's one ingest path gave
it (:class:`dicom_node.ingest.IngestResult`): stored ones are listed in the
Referenced SOP Sequence, refused ones in the Failed SOP Sequence with that
status as their Failure Reason (PS3.18 Table I.2-2 uses the C-STORE codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

__all__ = ["InstanceOutcome", "http_status", "store_instances_response"]


@dataclass(frozen=True)
class InstanceOutcome:
    """What became of one part of a STOW-RS request.

    The SOP UIDs are those of the part's File Meta Information (``None`` when
    it had none that could be read); ``status`` is the C-STORE status.
    """

    sop_class_uid: str | None
    sop_instance_uid: str | None
    status: int
    reason: str | None = None
    study_instance_uid: str | None = None

    @property
    def stored(self) -> bool:
        return self.status == 0


def http_status(outcomes: Sequence[InstanceOutcome]) -> int:
    """PS3.18 Table 10.5.3-1: 200 when every instance was stored, 202 when some were,
    409 when none was."""
    stored = sum(outcome.stored for outcome in outcomes)
    if outcomes and stored == len(outcomes):
        return 200
    return 202 if stored else 409


def store_instances_response(
    outcomes: Sequence[InstanceOutcome], *, study_url: str | None
) -> Dataset:
    """The Store Instances Response Module (PS3.18 Table I.1-1).

    ``study_url`` is the study resource the instances were stored to (its
    Retrieve URL (0008,1190)); ``None`` when they were not stored to one study,
    which leaves the attribute empty (Type 2).
    """
    response = Dataset()
    response.RetrieveURL = study_url or None
    stored = [outcome for outcome in outcomes if outcome.stored]
    failed = [outcome for outcome in outcomes if not outcome.stored]
    if stored:
        response.ReferencedSOPSequence = [_referenced(outcome) for outcome in stored]
    if failed:
        response.FailedSOPSequence = [_failed(outcome) for outcome in failed]
    return response


def _referenced(outcome: InstanceOutcome) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = outcome.sop_class_uid
    item.ReferencedSOPInstanceUID = outcome.sop_instance_uid
    return item


def _failed(outcome: InstanceOutcome) -> Dataset:
    item = Dataset()
    if outcome.sop_class_uid:
        item.ReferencedSOPClassUID = outcome.sop_class_uid
    if outcome.sop_instance_uid:
        item.ReferencedSOPInstanceUID = outcome.sop_instance_uid
    item.FailureReason = outcome.status
    return item

"""Deterministic UIDs for everything the exporters produce.

Re-running the same job (same study revision, same model version) reproduces
the same UIDs, so a redelivered task overwrites nothing and duplicates nothing;
a new revision or model version gives new UIDs (PACS such as Orthanc keep the
first object when a SOP Instance UID repeats). A radiologist's sign-off number
(:class:`~exporters.protocol.SignOff`) is a further part of the DICOM objects'
UIDs: a signed set gets new UIDs, and building it twice gives the same ones.
"""

from __future__ import annotations

from engine.report import GroundedReport, derive_uid
from exporters.protocol import OutputKind

__all__ = ["output_uid"]


def output_uid(
    report: GroundedReport,
    *,
    revision: int,
    kind: OutputKind,
    language: str,
    role: str,
    part: str = "",
    signoff: int = 0,
) -> str:
    """The UID of one output object or series.

    Parameters
    ----------
    report
        The report the output is built from (study UID and model version are used).
    revision
        The study revision (a study that received more instances after it was
        processed gets a new revision and new outputs).
    kind
        Output kind.
    language
        BCP-47 tag of the output's language.
    role
        Which UID of the output: ``"series"``, ``"instance"``, ...
    part
        Disambiguates several outputs of one kind and language (e.g. the
        source Series Instance UID a GSPS belongs to).
    signoff
        The radiologist's sign-off number (:attr:`exporters.protocol.SignOff.number`), or 0
        for the model's own outputs (whose UIDs do not change with this parameter).
    """
    if isinstance(signoff, bool) or not isinstance(signoff, int) or signoff < 0:
        raise ValueError(f"signoff must be a non-negative int, got {signoff!r}")
    parts: tuple[object, ...] = (
        "radground-output",
        report.study_instance_uid,
        revision,
        report.model.device_uid,
        OutputKind(kind).value,
        language,
        role,
        part,
    )
    if signoff:
        parts = (*parts, "signoff", signoff)
    return derive_uid(*parts)

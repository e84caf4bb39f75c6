"""Enumerated values of the HL7 v2 exporter (HL7 v2.5.1 tables)."""

from __future__ import annotations

import enum

__all__ = ["ProcessingId", "ResultStatus", "ValueType"]


class ProcessingId(enum.StrEnum):
    """MSH-11 Processing ID (HL7 table 0103)."""

    PRODUCTION = "P"
    TRAINING = "T"
    DEBUGGING = "D"


class ResultStatus(enum.StrEnum):
    """OBR-25 / OBX-11 result status (HL7 tables 0123 / 0085).

    AI output is unverified until a radiologist signs: RadGround sends ``P``, then
    ``F`` after the sign-off, or ``C`` when the signed result corrects a ``P`` already sent.
    """

    PRELIMINARY = "P"
    FINAL = "F"
    CORRECTED = "C"


class ValueType(enum.StrEnum):
    """OBX-2 value types RadGround writes (HL7 table 0125)."""

    CODED = "CWE"
    NUMERIC = "NM"
    TEXT = "TX"
    STRING = "ST"
    REFERENCE_POINTER = "RP"

"""Read a STOW-RS Store Instances Response (PS3.18 §10.5.3) into per-instance outcomes.

The answer of :func:`worklist.destinations.dicomweb.store_instances` is a data set in
``application/dicom+json`` (PS3.18 Annex F): Referenced SOP Sequence (0008,1199) for the
stored instances, with an optional Warning Reason (0008,1196), and Failed SOP Sequence
(0008,1198) with a Failure Reason (0008,1197) for the others.

Classification
--------------
Per instance, when the peer answered with a readable Store Instances Response
(any HTTP status):

==============================  ===============================================  ==================
Failure Reason (0008,1197)      Meaning (PS3.4 Annex B.2.3, PS3.7 Annex C)       Outcome
==============================  ===============================================  ==================
0xA700-0xA7FF                   Refused: Out of Resources                        failed-retryable
0x0110                          Processing failure (generic; Orthanc uses it     failed-retryable
                                for every refusal)
0x0213                          Resource limitation                              failed-retryable
0x0111                          Duplicate SOP Instance: the peer has it already  stored
0x0122                          SOP Class not supported                          failed-final
0x0124                          Not authorized                                   failed-final
0xA900-0xA9FF                   Data Set does not match SOP Class                failed-final
0xC000-0xCFFF                   Cannot understand (0xC122: Transfer Syntax not   failed-final
                                supported)
any other value                 unknown to this client                           failed-final
in Referenced SOP Sequence      stored; Warning Reason 0xB000 coercion, 0xB006   stored
                                elements discarded, 0xB007 does not match SOP
                                Class are kept in ``warning_reason``
named in neither sequence       the peer did not report it                       failed-retryable
==============================  ===============================================  ==================

For the whole request, when no Store Instances Response came:

================================================  ==================
Answer                                            Outcome (every instance)
================================================  ==================
connection refused/reset, timeout, other          failed-retryable
transport errors
HTTP 408, 429, 5xx but 501/505                    failed-retryable (``retry_after`` from
                                                  ``Retry-After``)
TLS certificate refused                           failed-final
HTTP 3xx (redirects are not followed), 400, 401,  failed-final
403, 404, 413, 415, other 4xx, 501, 505
HTTP 2xx whose body is not a Store Instances      failed-final (a base URL that is not
Response                                          a DICOMweb service)
================================================  ==================

The peer's answer is kept for the operator as one short line (:attr:`StowResult.peer_answer`):
HTTP status, media type and counts, or for a non-DICOM error body its first
characters with every UID replaced by its short hash (:func:`dicom_node.uids.short_uid`).
Logs carry the endpoint, status codes, counts and durations only.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from dicom_node.uids import short_uid
from worklist.destinations.http_common import parse_retry_after

__all__ = [
    "DICOM_JSON",
    "FailureReason",
    "InstanceOutcome",
    "SentInstance",
    "StowInstanceResult",
    "StowResult",
    "WarningReason",
    "all_instances",
    "classify_failure_reason",
    "one_line",
    "read_answer",
]

#: The DICOM JSON media type (PS3.18 §8.7.3.1, Annex F).
DICOM_JSON = "application/dicom+json"
#: Longest peer answer kept for the operator (characters).
PEER_ANSWER_LIMIT = 300
#: 4xx statuses that still mean "try again later" (RFC 9110 15.5.9, RFC 6585 4).
_TRANSIENT_4XX = frozenset({408, 429})
#: 5xx statuses that retrying will not change (501 Not Implemented, 505).
_PERMANENT_5XX = frozenset({501, 505})
#: A UID in free text: five or more dotted numbers (an IPv4 address has four).
_UID_TEXT = re.compile(r"\b\d+(?:\.\d+){4,}\b")

# Tags of the Store Instances Response (PS3.18 Table 10.5.3-1), DICOM JSON keys.
_RETRIEVE_URL = "00081190"
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_CLASS_UID = "00081150"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"
class InstanceOutcome(StrEnum):
    """What became of one instance."""

    STORED = "stored"
    #: Not stored; sending it again later may succeed.
    FAILED_RETRYABLE = "failed-retryable"
    #: Not stored; sending it again gives the same answer: the operator must act.
    FAILED_FINAL = "failed-final"


class FailureReason:
    """Failure Reason (0008,1197) values a STOW-RS origin server sends (PS3.18 §10.5.3,
    the C-STORE statuses of PS3.4 Annex B.2.3 and the general statuses of PS3.7 Annex C)."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124
    RESOURCE_LIMITATION = 0x0213
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


class WarningReason:
    """Warning Reason (0008,1196) values (PS3.18 §10.5.3; PS3.4 Annex B.2.3)."""

    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007


_REASON_TEXT = {
    FailureReason.PROCESSING_FAILURE: "Processing failure",
    FailureReason.DUPLICATE_SOP_INSTANCE: "Duplicate SOP Instance",
    FailureReason.SOP_CLASS_NOT_SUPPORTED: "SOP Class not supported",
    FailureReason.NOT_AUTHORIZED: "Not authorized",
    FailureReason.RESOURCE_LIMITATION: "Resource limitation",
    FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED: "Transfer Syntax not supported",
    WarningReason.COERCION_OF_DATA_ELEMENTS: "Coercion of data elements",
    WarningReason.ELEMENTS_DISCARDED: "Elements discarded",
    WarningReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS: "Data set does not match SOP Class",
}


def _reason_text(code: int) -> str:
    if code in _REASON_TEXT:
        name = _REASON_TEXT[code]
    elif 0xA700 <= code <= 0xA7FF:
        name = "Refused: Out of Resources"
    elif 0xA900 <= code <= 0xA9FF:
        name = "Data Set does not match SOP Class"
    elif 0xC000 <= code <= 0xCFFF:
        name = "Cannot understand"
    else:
        name = "unknown reason"
    return f"0x{code:04X} {name}"


def classify_failure_reason(code: int) -> InstanceOutcome:
    """The outcome of an instance the peer listed in the Failed SOP Sequence with
    Failure Reason ``code`` (the table in this module's docstring)."""
    if 0xA700 <= code <= 0xA7FF or code in (
        FailureReason.PROCESSING_FAILURE, FailureReason.RESOURCE_LIMITATION
    ):
        return InstanceOutcome.FAILED_RETRYABLE
    if code == FailureReason.DUPLICATE_SOP_INSTANCE:
        return InstanceOutcome.STORED
    return InstanceOutcome.FAILED_FINAL


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class StowInstanceResult:
    """What the peer did with one instance.

    Attributes
    ----------
    sop_instance_uid, sop_class_uid
        The instance, read from the file sent.
    outcome
        Stored, failed-retryable or failed-final (module docstring's tables).
    reason
        Why, for the operator: ``""`` when stored without warning, else e.g.
        ``"0x0110 Processing failure"``, ``"HTTP 503 Service Unavailable"``,
        ``"ConnectError"``; no UIDs, no patient data.
    failure_reason, warning_reason
        Failure Reason (0008,1197) / Warning Reason (0008,1196) as sent, or None.
    retrieve_url
        The instance's Retrieve URL (0008,1190) when the peer gave one.
    """

    sop_instance_uid: str
    sop_class_uid: str
    outcome: InstanceOutcome
    reason: str = ""
    failure_reason: int | None = None
    warning_reason: int | None = None
    retrieve_url: str | None = None


@dataclass(frozen=True)
class StowResult:
    """The outcome of one STOW-RS request.

    Attributes
    ----------
    status_code
        The HTTP status, or None when no HTTP answer came.
    instances
        One :class:`StowInstanceResult` per instance sent, in the order given.
    peer_answer
        One line for the operator: the HTTP status, media type and counts, or
        what went wrong on the way (UIDs hashed, at most 300 characters).
    elapsed_s
        Seconds from sending the request to reading the whole answer.
    retry_after
        The peer's ``Retry-After`` in seconds (RFC 9110 10.2.3), or None.
    """

    status_code: int | None
    instances: tuple[StowInstanceResult, ...]
    peer_answer: str
    elapsed_s: float
    retry_after: float | None = None

    def _with(self, outcome: InstanceOutcome) -> tuple[StowInstanceResult, ...]:
        return tuple(i for i in self.instances if i.outcome is outcome)

    @property
    def stored(self) -> tuple[StowInstanceResult, ...]:
        return self._with(InstanceOutcome.STORED)

    @property
    def retryable(self) -> tuple[StowInstanceResult, ...]:
        return self._with(InstanceOutcome.FAILED_RETRYABLE)

    @property
    def final(self) -> tuple[StowInstanceResult, ...]:
        return self._with(InstanceOutcome.FAILED_FINAL)

    @property
    def complete(self) -> bool:
        """Every instance is stored."""
        return all(i.outcome is InstanceOutcome.STORED for i in self.instances)

    @property
    def to_retry(self) -> tuple[str, ...]:
        """SOP Instance UIDs worth sending again (failed-retryable), in the order given."""
        return tuple(i.sop_instance_uid for i in self.retryable)



@dataclass(frozen=True)
class SentInstance:
    """The UIDs of one instance sent, read from its file."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str

# -- the answer ----------------------------------------------------------------


def all_instances(parts: Sequence[SentInstance], outcome: InstanceOutcome, reason: str, *,
                  status_code: int | None, peer_answer: str, elapsed: float,
                  retry_after: float | None = None) -> StowResult:
    """A result giving every instance the same outcome (the request-level table)."""
    return StowResult(
        status_code=status_code,
        instances=tuple(StowInstanceResult(p.sop_instance_uid, p.sop_class_uid, outcome, reason)
                        for p in parts),
        peer_answer=one_line(peer_answer),
        elapsed_s=elapsed,
        retry_after=retry_after,
    )


def one_line(text: str, limit: int = PEER_ANSWER_LIMIT) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _first(item: Any, tag: str) -> Any:
    element = item.get(tag) if isinstance(item, dict) else None
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _items(dataset: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _response_dataset(response: httpx.Response) -> dict[str, Any] | None:
    """The Store Instances Response as DICOM JSON, or None when the body is not one."""
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    # Orthanc's DICOMweb plugin sends its 409 answer without a Content-Type: read it too.
    if media_type not in (DICOM_JSON, "application/json", ""):
        return None
    try:
        data = json.loads(response.content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, list) and len(data) == 1:  # some servers wrap the data set in an array
        data = data[0]
    if not isinstance(data, dict):
        return None
    if _FAILED_SOP_SEQUENCE not in data and _REFERENCED_SOP_SEQUENCE not in data:
        return None
    return data


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0) if value.lower().startswith("0x") else int(value)
        except ValueError:
            return None
    return None


def read_answer(response: httpx.Response, parts: Sequence[SentInstance], elapsed: float, *,
                 study_instance_uid: str | None) -> StowResult:
    """Classify the peer's HTTP answer to a STOW-RS request per instance (module tables).

    ``study_instance_uid`` is the study the request was scoped to, if any: the
    peer's refusal of an instance of another study is final.
    """
    status = response.status_code
    head = f"HTTP {status} {response.reason_phrase}".rstrip()
    media_type = response.headers.get("Content-Type", "no Content-Type").split(";")[0].strip()
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    dataset = _response_dataset(response)
    if dataset is None:
        peer_answer = f"{head} ({media_type}, {len(response.content)} bytes)"
        excerpt = _error_excerpt(response)
        if excerpt:
            peer_answer += f": {excerpt}"
        if 200 <= status < 300:
            return all_instances(
                parts,
                InstanceOutcome.FAILED_FINAL,
                f"{head} but no Store Instances Response (is the base URL a DICOMweb service?)",
                status_code=status,
                peer_answer=peer_answer,
                elapsed=elapsed,
            )
        transient = (status >= 500 and status not in _PERMANENT_5XX) or status in _TRANSIENT_4XX
        outcome = InstanceOutcome.FAILED_RETRYABLE if transient else InstanceOutcome.FAILED_FINAL
        return all_instances(
            parts,
            outcome,
            head,
            status_code=status,
            peer_answer=peer_answer,
            elapsed=elapsed,
            retry_after=retry_after,
        )

    referenced = {
        str(_first(item, _REFERENCED_SOP_INSTANCE_UID)): item
        for item in _items(dataset, _REFERENCED_SOP_SEQUENCE)
    }
    failed = {
        str(_first(item, _REFERENCED_SOP_INSTANCE_UID)): item
        for item in _items(dataset, _FAILED_SOP_SEQUENCE)
    }
    results = []
    for part in parts:
        uid = part.sop_instance_uid
        if uid in referenced:
            item = referenced[uid]
            warning = _int_or_none(_first(item, _WARNING_REASON))
            url = _first(item, _RETRIEVE_URL)
            results.append(
                StowInstanceResult(
                    uid,
                    part.sop_class_uid,
                    InstanceOutcome.STORED,
                    reason="" if warning is None else "warning " + _reason_text(warning),
                    warning_reason=warning,
                    retrieve_url=url if isinstance(url, str) else None,
                )
            )
        elif uid in failed:
            code = _int_or_none(_first(failed[uid], _FAILURE_REASON))
            if study_instance_uid is not None and part.study_instance_uid != study_instance_uid:
                results.append(
                    StowInstanceResult(
                        uid,
                        part.sop_class_uid,
                        InstanceOutcome.FAILED_FINAL,
                        reason="instance of another study than the request's study (PS3.18 §10.5.1)"
                        + ("" if code is None else f"; peer said {_reason_text(code)}"),
                        failure_reason=code,
                    )
                )
            elif code is None:
                results.append(
                    StowInstanceResult(
                        uid,
                        part.sop_class_uid,
                        InstanceOutcome.FAILED_FINAL,
                        reason="failed without a Failure Reason",
                    )
                )
            else:
                results.append(
                    StowInstanceResult(
                        uid,
                        part.sop_class_uid,
                        classify_failure_reason(code),
                        reason=_reason_text(code),
                        failure_reason=code,
                    )
                )
        else:
            results.append(
                StowInstanceResult(
                    uid,
                    part.sop_class_uid,
                    InstanceOutcome.FAILED_RETRYABLE,
                    reason="not reported in the Store Instances Response",
                )
            )
    reasons = sorted({f"0x{r.failure_reason:04X}" for r in results if r.failure_reason is not None})
    counts = (
        f"{sum(r.outcome is InstanceOutcome.STORED for r in results)} stored, "
        f"{sum(r.outcome is not InstanceOutcome.STORED for r in results)} not stored"
    )
    peer_answer = f"{head} ({media_type}): {counts}"
    if reasons:
        peer_answer += f"; failure reasons {', '.join(reasons)}"
    return StowResult(
        status_code=status,
        instances=tuple(results),
        peer_answer=one_line(peer_answer),
        elapsed_s=elapsed,
        retry_after=retry_after,
    )


def _error_excerpt(response: httpx.Response) -> str:
    """The first words of a text or JSON error body (HTML and binary bodies are skipped)."""
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not (media_type.startswith("text/plain") or media_type.endswith("json")):
        return ""
    text = response.content[:2048].decode(response.encoding or "utf-8", errors="replace")
    try:
        data = json.loads(response.content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if isinstance(data, dict):  # Orthanc: Message/Details; problem+json: title/detail
        fields = [data.get(k) for k in ("Message", "Details", "title", "detail", "message")]
        text = " - ".join(str(f) for f in fields if isinstance(f, str) and f) or text
    return one_line(_UID_TEXT.sub(lambda m: f"uid:{short_uid(m.group(0))}", text), 160)



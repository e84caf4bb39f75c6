"""Store DICOM instances on a DICOMweb origin server with STOW-RS (PS3.18 §10.5).

One HTTP interaction per call: ``POST {base}/studies`` (or ``{base}/studies/{study}``)
with a ``multipart/related; type="application/dicom"`` body (PS3.18 §8.6.1.2, RFC 2387),
one part per PS3.10 file, streamed from disk in chunks with a known
``Content-Length`` so a large SR or Secondary Capture is never held in memory
(not even once). The answer is a Store Instances Response data set
(PS3.18 §10.5.3, Table 10.5.3-1) in ``application/dicom+json`` (PS3.18 Annex F):
Referenced SOP Sequence (0008,1199) for the stored instances, with an optional
Warning Reason (0008,1196), and Failed SOP Sequence (0008,1198) with a Failure
Reason (0008,1197) for the others.

:func:`store_instances` never raises for a delivery failure: it returns a
:class:`StowResult` with one :class:`StowInstanceResult` per instance, each
``stored``, ``failed-retryable`` or ``failed-final``, so a 409 with some failed
instances lets the caller send again only :attr:`StowResult.to_retry`. Sending
an instance again is safe: it has the same SOP Instance UID.

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
import logging
import math
import re
import ssl
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicom_node.uids import is_valid_uid, short_uid
from worklist.destinations.security import HttpAuth, TlsOptions, check_header_safe

__all__ = [
    "DICOM_JSON",
    "FailureReason",
    "InstanceOutcome",
    "StowInstanceResult",
    "StowResult",
    "WarningReason",
    "classify_failure_reason",
    "make_client",
    "store_instances",
]

_log = logging.getLogger(__name__)

#: The DICOM JSON media type (PS3.18 §8.7.3.1, Annex F).
DICOM_JSON = "application/dicom+json"
#: Each part's media type: a PS3.10 file (PS3.18 §8.7.3.3.1).
DICOM_FILE = "application/dicom"
#: Bytes read from disk per chunk of the body.
CHUNK_SIZE = 256 * 1024
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


# -- the request ---------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    path: Path
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str


def _read_part(path: Path) -> _Part:
    try:
        with path.open("rb") as file:
            head = file.read(132)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[128:132] != b"DICM":
        raise ValueError(f"{path} is not a DICOM PS3.10 file (no 'DICM' prefix); STOW-RS sends "
                         "PS3.10 files (PS3.18 §8.7.3.3.1)")
    try:
        header = dcmread(path, stop_before_pixels=True, specific_tags=[
            "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable DICOM file: {exc}") from None
    uids = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        value = str(header.get(keyword, "") or "")
        if not is_valid_uid(value):
            raise ValueError(f"{path} has no valid {keyword}")
        uids[keyword] = value
    return _Part(path, path.stat().st_size, uids["SOPClassUID"], uids["SOPInstanceUID"],
                 uids["StudyInstanceUID"])


class _MultipartBody:
    """A ``multipart/related`` body (RFC 2387, RFC 2046 §5.1) streamed from files."""

    def __init__(self, parts: Sequence[_Part], *, chunk_size: int) -> None:
        self.boundary = f"radground-{uuid.uuid4().hex}"
        self.parts = parts
        self.chunk_size = chunk_size
        self._head = f"--{self.boundary}\r\nContent-Type: {DICOM_FILE}\r\n\r\n".encode("ascii")
        self._tail = f"--{self.boundary}--\r\n".encode("ascii")

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{DICOM_FILE}"; boundary={self.boundary}'

    @property
    def length(self) -> int:
        per_part = len(self._head) + 2  # CRLF before the next delimiter
        return sum(part.size + per_part for part in self.parts) + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            yield self._head
            sent = 0
            with part.path.open("rb") as file:
                while chunk := file.read(self.chunk_size):
                    sent += len(chunk)
                    yield chunk
            if sent != part.size:  # the length announced would be wrong
                raise OSError(f"{part.path.name} changed size while being sent")
            yield b"\r\n"
        yield self._tail


def _check_base_url(base_url: str) -> str:
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string, got {type(base_url).__name__}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not carry credentials; pass them as auth")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query or fragment (PS3.18 §8.2 Base URI)")
    return base_url.rstrip("/")


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def make_client(*, tls: TlsOptions | None = None, timeout: float = 60.0) -> httpx.Client:
    """An httpx client for :func:`store_instances` to reuse (keep-alive between calls):
    no redirects followed, no proxy settings from the environment, TLS per ``tls``."""
    verify: ssl.SSLContext | bool = tls.ssl_context() if tls is not None else True
    return httpx.Client(verify=verify, timeout=timeout, follow_redirects=False, trust_env=False)


def store_instances(
    base_url: str,
    instances: Sequence[Path | str],
    *,
    auth: HttpAuth | None = None,
    tls: TlsOptions | None = None,
    study_instance_uid: str | None = None,
    timeout: float = 60.0,
    client: httpx.Client | None = None,
    request_id: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> StowResult:
    """Store PS3.10 files on a DICOMweb origin server (STOW-RS, PS3.18 §10.5).

    Parameters
    ----------
    base_url
        The DICOMweb service's base URL (PS3.18 §8.2), e.g.
        ``https://pacs.example.org/dicom-web``; the request goes to
        ``{base_url}/studies`` (a trailing ``/`` is dropped).
    instances
        Paths of PS3.10 files, each sent as one ``application/dicom`` part,
        streamed from disk. SOP Instance UIDs must be distinct.
    auth
        Credentials (:class:`HttpAuth`); None for none.
    tls
        TLS options for an ``https`` base URL; ignored when ``client`` is given
        (pass it to :func:`make_client` instead) -- giving both is an error.
    study_instance_uid
        Post to ``{base_url}/studies/{study_instance_uid}``: the peer refuses
        instances of other studies (PS3.18 §10.5.1), and such a refusal is
        failed-final whatever Failure Reason the peer gives (sending it to the
        same study again cannot succeed).
    timeout
        Seconds allowed for each of connecting, sending, waiting and reading (> 0).
    client
        An httpx client to reuse (:func:`make_client`); the caller keeps ownership.
    request_id
        Sent as ``X-Request-Id`` so the peer's logs can be matched with ours
        (e.g. the delivery id; never patient data).
    chunk_size
        Bytes read from disk per chunk of the body.

    Returns
    -------
    StowResult
        One outcome per instance (the tables of this module's docstring).

    Raises
    ------
    ValueError, TypeError
        Bad arguments: no instances, a file that is not a PS3.10 file with
        valid UIDs, repeated SOP Instance UIDs, instances of another study than
        a bad base URL, timeout or request id.
    """
    url = _check_base_url(base_url) + "/studies"
    auth = HttpAuth.none() if auth is None else auth
    if not isinstance(auth, HttpAuth):
        raise TypeError(f"auth must be an HttpAuth, got {type(auth).__name__}")
    if tls is not None and not isinstance(tls, TlsOptions):
        raise TypeError(f"tls must be TlsOptions, got {type(tls).__name__}")
    if tls is not None and client is not None:
        raise ValueError("give tls to make_client() when passing a client, not to store_instances()")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
        math.isfinite(timeout) and timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if isinstance(instances, (str, Path)) or not instances:
        raise ValueError("instances must be a non-empty sequence of file paths")
    parts = [_read_part(Path(p)) for p in instances]
    seen: set[str] = set()
    for part in parts:
        if part.sop_instance_uid in seen:
            raise ValueError(f"{part.path} repeats SOP Instance UID {short_uid(part.sop_instance_uid)}")
        seen.add(part.sop_instance_uid)
    if study_instance_uid is not None:
        if not is_valid_uid(study_instance_uid):
            raise ValueError("study_instance_uid is not a valid UID")
        url += "/" + quote(study_instance_uid, safe="")
    body = _MultipartBody(parts, chunk_size=chunk_size)
    headers = {
        "Content-Type": body.content_type,
        "Content-Length": str(body.length),
        "Accept": DICOM_JSON,
        **auth.headers(),
    }
    if request_id is not None:
        check_header_safe("request_id", request_id)
        headers["X-Request-Id"] = request_id
    endpoint = _endpoint(url)

    owned = client is None
    http = make_client(tls=tls, timeout=timeout) if owned else client
    assert http is not None
    started = time.monotonic()
    try:
        try:
            response = http.post(url, content=iter(body), headers=headers, timeout=timeout,
                                 follow_redirects=False)
        except httpx.RequestError as exc:
            elapsed = time.monotonic() - started
            return _transport_failure(exc, parts, endpoint, elapsed)
        except OSError as exc:  # a file vanished or changed while streaming
            elapsed = time.monotonic() - started
            _log.warning("STOW-RS to %s: reading the files failed after %.3f s", endpoint, elapsed)
            return _all(parts, InstanceOutcome.FAILED_RETRYABLE, f"reading the file failed: {exc}",
                        status_code=None, peer_answer=f"not sent: {exc}", elapsed=elapsed)
    finally:
        if owned:
            http.close()
    elapsed = time.monotonic() - started
    result = _read_answer(response, parts, elapsed, study_instance_uid=study_instance_uid)
    _log.info(
        "STOW-RS to %s: HTTP %d in %.3f s, %d stored, %d retryable, %d final",
        endpoint, response.status_code, elapsed, len(result.stored), len(result.retryable),
        len(result.final),
    )
    return result


# -- the answer ----------------------------------------------------------------


def _all(parts: Sequence[_Part], outcome: InstanceOutcome, reason: str, *,
         status_code: int | None, peer_answer: str, elapsed: float,
         retry_after: float | None = None) -> StowResult:
    return StowResult(
        status_code=status_code,
        instances=tuple(StowInstanceResult(p.sop_instance_uid, p.sop_class_uid, outcome, reason)
                        for p in parts),
        peer_answer=_one_line(peer_answer),
        elapsed_s=elapsed,
        retry_after=retry_after,
    )


def _transport_failure(exc: httpx.RequestError, parts: Sequence[_Part], endpoint: str,
                       elapsed: float) -> StowResult:
    kind = type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            _log.warning("STOW-RS to %s: TLS certificate refused after %.3f s", endpoint, elapsed)
            what = f"TLS certificate of {endpoint} refused: {cause.verify_message}"
            return _all(parts, InstanceOutcome.FAILED_FINAL, "TLS certificate refused",
                        status_code=None, peer_answer=what, elapsed=elapsed)
        cause = cause.__cause__ or cause.__context__
    _log.warning("STOW-RS to %s: %s after %.3f s (retryable)", endpoint, kind, elapsed)
    detail = f"{kind}: {exc}" if str(exc) else kind
    return _all(parts, InstanceOutcome.FAILED_RETRYABLE, kind, status_code=None,
                peer_answer=f"no answer from {endpoint}: {detail}", elapsed=elapsed)


def _one_line(text: str, limit: int = PEER_ANSWER_LIMIT) -> str:
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


def _read_answer(response: httpx.Response, parts: Sequence[_Part], elapsed: float, *,
                 study_instance_uid: str | None) -> StowResult:
    status = response.status_code
    head = f"HTTP {status} {response.reason_phrase}".rstrip()
    media_type = response.headers.get("Content-Type", "no Content-Type").split(";")[0].strip()
    retry_after = _retry_after(response.headers.get("Retry-After"))
    dataset = _response_dataset(response)
    if dataset is None:
        peer_answer = f"{head} ({media_type}, {len(response.content)} bytes)"
        excerpt = _error_excerpt(response)
        if excerpt:
            peer_answer += f": {excerpt}"
        if 200 <= status < 300:
            return _all(parts, InstanceOutcome.FAILED_FINAL,
                        f"{head} but no Store Instances Response (is the base URL a DICOMweb service?)",
                        status_code=status, peer_answer=peer_answer, elapsed=elapsed)
        transient = (status >= 500 and status not in _PERMANENT_5XX) or status in _TRANSIENT_4XX
        outcome = InstanceOutcome.FAILED_RETRYABLE if transient else InstanceOutcome.FAILED_FINAL
        return _all(parts, outcome, head, status_code=status, peer_answer=peer_answer,
                    elapsed=elapsed, retry_after=retry_after)

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
            results.append(StowInstanceResult(
                uid, part.sop_class_uid, InstanceOutcome.STORED,
                reason="" if warning is None else "warning " + _reason_text(warning),
                warning_reason=warning, retrieve_url=url if isinstance(url, str) else None,
            ))
        elif uid in failed:
            code = _int_or_none(_first(failed[uid], _FAILURE_REASON))
            if study_instance_uid is not None and part.study_instance_uid != study_instance_uid:
                results.append(StowInstanceResult(
                    uid, part.sop_class_uid, InstanceOutcome.FAILED_FINAL,
                    reason="instance of another study than the request's study (PS3.18 §10.5.1)"
                    + ("" if code is None else f"; peer said {_reason_text(code)}"),
                    failure_reason=code))
            elif code is None:
                results.append(StowInstanceResult(
                    uid, part.sop_class_uid, InstanceOutcome.FAILED_FINAL,
                    reason="failed without a Failure Reason"))
            else:
                results.append(StowInstanceResult(
                    uid, part.sop_class_uid, classify_failure_reason(code),
                    reason=_reason_text(code), failure_reason=code))
        else:
            results.append(StowInstanceResult(
                uid, part.sop_class_uid, InstanceOutcome.FAILED_RETRYABLE,
                reason="not reported in the Store Instances Response"))
    reasons = sorted({f"0x{r.failure_reason:04X}" for r in results if r.failure_reason is not None})
    counts = (f"{sum(r.outcome is InstanceOutcome.STORED for r in results)} stored, "
              f"{sum(r.outcome is not InstanceOutcome.STORED for r in results)} not stored")
    peer_answer = f"{head} ({media_type}): {counts}"
    if reasons:
        peer_answer += f"; failure reasons {', '.join(reasons)}"
    return StowResult(status_code=status, instances=tuple(results),
                      peer_answer=_one_line(peer_answer), elapsed_s=elapsed, retry_after=retry_after)


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
    return _one_line(_UID_TEXT.sub(lambda m: f"uid:{short_uid(m.group(0))}", text), 160)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 10.2.3): delay-seconds or an
    HTTP-date (seconds from now, at least 0); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

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

How each answer is classified, per instance and per request, is tabled in
:mod:`worklist.destinations.stow_response`.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicom_node.uids import is_valid_uid, short_uid
from worklist.destinations.errors import InvalidStowRequestError
from worklist.destinations.http_common import check_base_url
from worklist.destinations.security import HttpAuth, TlsOptions, check_header_safe
from worklist.destinations.stow_response import (
    DICOM_JSON,
    FailureReason,
    InstanceOutcome,
    SentInstance,
    StowInstanceResult,
    StowResult,
    WarningReason,
    all_instances,
    classify_failure_reason,
    read_answer,
)

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

#: Each part's media type: a PS3.10 file (PS3.18 §8.7.3.3.1).
DICOM_FILE = "application/dicom"
#: Bytes read from disk per chunk of the body.
CHUNK_SIZE = 256 * 1024


# -- the request ---------------------------------------------------------------


@dataclass(frozen=True)
class _Part(SentInstance):
    """One instance to send: its UIDs, its file and the file's size in bytes."""

    path: Path
    size: int


def _read_part(path: Path) -> _Part:
    try:
        with path.open("rb") as file:
            head = file.read(132)
    except OSError as exc:
        raise InvalidStowRequestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[128:132] != b"DICM":
        raise InvalidStowRequestError(
            f"{path} is not a DICOM PS3.10 file (no 'DICM' prefix); STOW-RS sends "
            "PS3.10 files (PS3.18 §8.7.3.3.1)"
        )
    try:
        header = dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"],
        )
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InvalidStowRequestError(f"{path} is not a readable DICOM file: {exc}") from None
    uids = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        value = str(header.get(keyword, "") or "")
        if not is_valid_uid(value):
            raise InvalidStowRequestError(f"{path} has no valid {keyword}")
        uids[keyword] = value
    return _Part(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        path=path,
        size=path.stat().st_size,
    )


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


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def make_client(*, tls: TlsOptions | None = None, timeout: float = 60.0) -> httpx.Client:
    """An httpx client for :func:`store_instances` to reuse (keep-alive between calls):
    no redirects followed, no proxy settings from the environment, TLS per ``tls``."""
    verify = (tls if tls is not None else TlsOptions()).ssl_context()
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
    InvalidStowRequestError
        (a ``ValueError``) Nothing was sent: no instances, a file that is not a
        PS3.10 file with valid UIDs, repeated SOP Instance UIDs, a bad base URL,
        study UID, timeout or request id.
    TypeError
        An argument of the wrong type (``auth``, ``tls``, ``base_url``).
    """
    url = check_base_url(base_url, error=InvalidStowRequestError, reference="PS3.18 §8.2 Base URI")
    url += "/studies"
    auth = HttpAuth.none() if auth is None else auth
    if not isinstance(auth, HttpAuth):
        raise TypeError(f"auth must be an HttpAuth, got {type(auth).__name__}")
    if tls is not None and not isinstance(tls, TlsOptions):
        raise TypeError(f"tls must be TlsOptions, got {type(tls).__name__}")
    if tls is not None and client is not None:
        raise InvalidStowRequestError(
            "give tls to make_client() when passing a client, not to store_instances()"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise InvalidStowRequestError(
            f"timeout must be a positive number of seconds, got {timeout!r}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidStowRequestError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if isinstance(instances, (str, Path)) or not instances:
        raise InvalidStowRequestError("instances must be a non-empty sequence of file paths")
    parts = [_read_part(Path(p)) for p in instances]
    seen: set[str] = set()
    for part in parts:
        if part.sop_instance_uid in seen:
            raise InvalidStowRequestError(
                f"{part.path} repeats SOP Instance UID {short_uid(part.sop_instance_uid)}"
            )
        seen.add(part.sop_instance_uid)
    if study_instance_uid is not None:
        if not is_valid_uid(study_instance_uid):
            raise InvalidStowRequestError("study_instance_uid is not a valid UID")
        url += "/" + quote(study_instance_uid, safe="")
    body = _MultipartBody(parts, chunk_size=chunk_size)
    headers = {
        "Content-Type": body.content_type,
        "Content-Length": str(body.length),
        "Accept": DICOM_JSON,
        **auth.headers(),
    }
    if request_id is not None:
        try:
            check_header_safe("request_id", request_id)
        except ValueError as exc:
            raise InvalidStowRequestError(str(exc)) from None
        headers["X-Request-Id"] = request_id
    endpoint = _endpoint(url)

    owned = client is None
    http = make_client(tls=tls, timeout=timeout) if owned else client
    assert http is not None
    started = time.monotonic()
    try:
        try:
            response = http.post(
                url, content=iter(body), headers=headers, timeout=timeout, follow_redirects=False
            )
        except httpx.RequestError as exc:
            elapsed = time.monotonic() - started
            return _transport_failure(exc, parts, endpoint, elapsed)
        except OSError as exc:  # a file vanished or changed while streaming
            elapsed = time.monotonic() - started
            _log.warning("STOW-RS to %s: reading the files failed after %.3f s", endpoint, elapsed)
            return all_instances(
                parts,
                InstanceOutcome.FAILED_RETRYABLE,
                f"reading the file failed: {exc}",
                status_code=None,
                peer_answer=f"not sent: {exc}",
                elapsed=elapsed,
            )
    finally:
        if owned:
            http.close()
    elapsed = time.monotonic() - started
    result = read_answer(response, parts, elapsed, study_instance_uid=study_instance_uid)
    _log.info(
        "STOW-RS to %s: HTTP %d in %.3f s, %d stored, %d retryable, %d final",
        endpoint,
        response.status_code,
        elapsed,
        len(result.stored),
        len(result.retryable),
        len(result.final),
    )
    return result


def _transport_failure(
    exc: httpx.RequestError, parts: Sequence[_Part], endpoint: str, elapsed: float
) -> StowResult:
    kind = type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            _log.warning("STOW-RS to %s: TLS certificate refused after %.3f s", endpoint, elapsed)
            what = f"TLS certificate of {endpoint} refused: {cause.verify_message}"
            return all_instances(
                parts,
                InstanceOutcome.FAILED_FINAL,
                "TLS certificate refused",
                status_code=None,
                peer_answer=what,
                elapsed=elapsed,
            )
        cause = cause.__cause__ or cause.__context__
    _log.warning("STOW-RS to %s: %s after %.3f s (retryable)", endpoint, kind, elapsed)
    detail = f"{kind}: {exc}" if str(exc) else kind
    return all_instances(
        parts,
        InstanceOutcome.FAILED_RETRYABLE,
        kind,
        status_code=None,
        peer_answer=f"no answer from {endpoint}: {detail}",
        elapsed=elapsed,
    )

"""Deliver a FHIR R4 transaction Bundle to an EHR's FHIR server.

One HTTP interaction: ``POST [base]`` with a Bundle of type ``transaction``
(FHIR R4 http.html#transaction), answered by a ``transaction-response`` Bundle
with one entry per request entry, in the same order (http.html#transaction-response).
The Bundles built by :func:`exporters.fhir.build_fhir_bundle` use only conditional
interactions (http.html#ccreate, http.html#cond-update), so posting the same Bundle
again after a lost response or a redelivered task creates nothing twice: a retry
is always safe, even after a timeout that hid a committed transaction.

Errors are classified once, here, for the worklist's delivery task:

* :class:`TransientFhirError` — connection errors, timeouts, HTTP 5xx (but 501
  and 505), 429 and 408: try again later (the delivery retry policy,
  :mod:`worklist.destinations.retry`; ``retry_after`` carries the server's ``Retry-After``);
* :class:`PermanentFhirError` — any other 4xx, 501 and 505, an unexpected 3xx (redirects are
  not followed: a POST with credentials must not be re-sent elsewhere), a TLS
  certificate the client refuses, and (:class:`InvalidFhirResponseError`) a 2xx
  whose body is not a transaction-response Bundle with 2xx entry statuses.
  Retrying would give the same answer; the job fails with the server's
  OperationOutcome kept for the operator.

This module takes explicit arguments only (no settings, no database, no Celery)
and logs status codes and durations only: never the Bundle, patient data, the
server's diagnostics or credentials.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from worklist.destinations.http_common import check_base_url, parse_retry_after
from worklist.destinations.security import HttpAuth, check_header_safe
from worklist.errors import InvalidFhirRequestError, WorklistError

__all__ = [
    "FHIR_JSON",
    "FhirDeliveryError",
    "FhirEntryResult",
    "FhirResult",
    "InvalidFhirResponseError",
    "PermanentFhirError",
    "TransientFhirError",
    "outcome_summary",
    "parse_retry_after",
    "post_transaction",
]

_log = logging.getLogger(__name__)

#: The FHIR JSON media type (R4 http.html#mime-type; json.html).
FHIR_JSON = "application/fhir+json"
_CONTENT_TYPE = f"{FHIR_JSON}; charset=utf-8"
#: How much of a server's OperationOutcome is kept for the operator (bytes of UTF-8).
OPERATION_OUTCOME_LIMIT = 64 * 1024
#: Longest one-line summary of an OperationOutcome (characters).
SUMMARY_LIMIT = 500
#: 4xx statuses that still mean "try again later" (RFC 9110 15.5.9, RFC 6585 4).
_TRANSIENT_4XX = frozenset({408, 429})
#: 5xx statuses that will not change by retrying: the server lacks the interaction
#: (501 Not Implemented, e.g. no transaction support) or the HTTP version (505).
_PERMANENT_5XX = frozenset({501, 505})


# -- results and errors --------------------------------------------------------


@dataclass(frozen=True)
class FhirEntryResult:
    """What the server did with one entry of the transaction (``Bundle.entry.response``).

    Attributes
    ----------
    status
        ``response.status`` as sent, e.g. ``"201 Created"``.
    status_code
        Its leading HTTP status code.
    location
        ``response.location``: the resource's server id, e.g.
        ``"DiagnosticReport/123/_history/1"`` (None when the server gave none).
    etag, last_modified
        ``response.etag`` and ``response.lastModified`` when given.
    resource_type, full_url, request_method, request_url
        From the request entry at the same position (``fullUrl`` is our
        ``urn:uuid:``), so callers can record which resource got which id.
    """

    status: str
    status_code: int
    location: str | None
    etag: str | None
    last_modified: str | None
    resource_type: str | None
    full_url: str | None
    request_method: str | None
    request_url: str | None


@dataclass(frozen=True)
class FhirResult:
    """A transaction the server committed.

    Attributes
    ----------
    status_code
        The HTTP status of the POST (a 2xx, normally 200).
    entries
        One :class:`FhirEntryResult` per Bundle entry, in request order.
    elapsed_s
        Seconds from sending the request to reading the whole response.
    """

    status_code: int
    entries: tuple[FhirEntryResult, ...]
    elapsed_s: float

    @property
    def locations(self) -> tuple[str | None, ...]:
        """Each entry's ``response.location``, in request order."""
        return tuple(entry.location for entry in self.entries)

    @property
    def created(self) -> int:
        """How many entries the server answered ``201 Created``."""
        return sum(1 for entry in self.entries if entry.status_code == 201)


class FhirDeliveryError(WorklistError):
    """A transaction Bundle was not delivered (base class).

    Attributes
    ----------
    status_code
        The HTTP status, or None when no HTTP answer came (connection, timeout).
    summary
        One line for the operator: the status and the OperationOutcome's
        diagnostics (or what went wrong on the way).
    operation_outcome
        The server's OperationOutcome as JSON text, truncated to 64 KB of UTF-8,
        or None when the answer carried none.
    """

    def __init__(
        self,
        summary: str,
        *,
        status_code: int | None = None,
        operation_outcome: str | None = None,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.status_code = status_code
        self.operation_outcome = operation_outcome


class TransientFhirError(FhirDeliveryError):
    """Try again later: connection error, timeout, 5xx (but 501, 505), 429 or 408.

    ``retry_after`` is the server's ``Retry-After`` in seconds (RFC 9110 10.2.3;
    an HTTP-date is turned into seconds from now), or None; the retry policy
    (:mod:`worklist.destinations.retry`) waits at least this long.
    """

    def __init__(self, summary: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(summary, **kwargs)
        self.retry_after = retry_after


class PermanentFhirError(FhirDeliveryError):
    """Retrying gives the same answer (4xx, 501/505, unexpected 3xx, refused TLS certificate):
    the delivery fails and the operator reads ``summary`` and ``operation_outcome``."""


class InvalidFhirResponseError(PermanentFhirError):
    """The server answered 2xx but not with a transaction-response Bundle whose
    entries all have 2xx statuses (the summary says which): a misconfigured base
    URL (a proxy's HTML page) or a server that breaks the transaction contract."""


# -- the request ---------------------------------------------------------------


def _parse_request(bundle_json: str | bytes) -> tuple[bytes, list[dict[str, Any]]]:
    if isinstance(bundle_json, str):
        body = bundle_json.encode("utf-8")
    elif isinstance(bundle_json, (bytes, bytearray, memoryview)):
        body = bytes(bundle_json)
    else:
        raise TypeError(f"bundle_json must be str or bytes, got {type(bundle_json).__name__}")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFhirRequestError(f"bundle_json is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise InvalidFhirRequestError("bundle_json is not a FHIR Bundle")
    if data.get("type") != "transaction":
        raise InvalidFhirRequestError(
            f"bundle_json is a {data.get('type')!r} Bundle, not a 'transaction'"
        )
    entries = data.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidFhirRequestError("bundle_json's entry is not a list of objects")
    return body, entries


def _endpoint(base_url: str) -> str:
    """scheme://host:port/path of the base, for logs (no query, no credentials)."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def post_transaction(
    base_url: str,
    bundle_json: str | bytes,
    *,
    auth: HttpAuth,
    timeout: float = 30.0,
    client: httpx.Client | None = None,
    request_id: str | None = None,
) -> FhirResult:
    """POST a FHIR R4 transaction Bundle to a server's base URL (R4 http.html#transaction).

    Parameters
    ----------
    base_url
        The server's service base URL, e.g. ``https://ehr.example.org/fhir``
        (http.html#root); the Bundle is POSTed to it (a trailing ``/`` is dropped).
    bundle_json
        The Bundle as JSON text (:func:`exporters.fhir.bundle_json`) or UTF-8
        bytes; it must be a Bundle of type ``transaction``. Sent as is with
        ``Content-Type: application/fhir+json; charset=utf-8``.
    auth
        Credentials (:class:`HttpAuth`; ``HttpAuth.none()`` for none).
    timeout
        Seconds allowed for each of connecting, sending, waiting for and reading
        the answer (httpx timeouts), > 0.
    client
        An httpx client to reuse (connection pooling, TLS settings, proxies);
        the caller keeps ownership. By default a client is made for this call.
    request_id
        Sent as ``X-Request-Id`` (R4 http.html#custom) so the EHR's logs can be
        matched with ours (e.g. the delivery's id; never patient data).

    Returns
    -------
    FhirResult
        The HTTP status and each entry's ``response`` (status, location).

    Raises
    ------
    TransientFhirError
        Connection error, timeout, HTTP 5xx but 501/505, 429 or 408 (``retry_after`` set
        from ``Retry-After``).
    PermanentFhirError
        Any other 4xx, 501 or 505, a 3xx, or a TLS certificate the client refused.
    InvalidFhirResponseError
        A 2xx whose body is not a transaction-response Bundle with one 2xx
        entry per request entry.
    ValueError, TypeError
        Bad arguments: not an http(s) base URL, not a transaction Bundle,
        a non-positive timeout, a request id with control characters, an
        ``auth`` that is not a :class:`HttpAuth`.
    """
    url = check_base_url(
        base_url, error=InvalidFhirRequestError, reference="FHIR R4 http.html#root"
    )
    if not isinstance(auth, HttpAuth):
        raise TypeError(f"auth must be a HttpAuth, got {type(auth).__name__}")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    body, request_entries = _parse_request(bundle_json)
    headers = {"Content-Type": _CONTENT_TYPE, "Accept": FHIR_JSON, **auth.headers()}
    if request_id is not None:
        check_header_safe("request_id", request_id)
        headers["X-Request-Id"] = request_id
    endpoint = _endpoint(url)

    owned = client is None
    http = client if client is not None else httpx.Client(follow_redirects=False, trust_env=False)
    started = time.monotonic()
    try:
        try:
            response = http.post(
                url, content=body, headers=headers, timeout=timeout, follow_redirects=False
            )
        except httpx.RequestError as exc:  # transport errors, and a body that cannot be decoded
            elapsed = time.monotonic() - started
            raise _transport_error(exc, endpoint, elapsed) from exc
    finally:
        if owned:
            http.close()
    elapsed = time.monotonic() - started
    status = response.status_code

    if 200 <= status < 300:
        try:
            entries = _read_transaction_response(response, request_entries)
        except InvalidFhirResponseError:
            _log.warning(
                "FHIR transaction to %s: HTTP %d in %.3f s but not a valid transaction-response",
                endpoint,
                status,
                elapsed,
            )
            raise
        _log.info(
            "FHIR transaction to %s: HTTP %d in %.3f s, %d entries (%d created)",
            endpoint,
            status,
            elapsed,
            len(entries),
            sum(1 for e in entries if e.status_code == 201),
        )
        return FhirResult(status_code=status, entries=entries, elapsed_s=elapsed)

    outcome_text, summary = _describe_failure(response)
    if (status >= 500 and status not in _PERMANENT_5XX) or status in _TRANSIENT_4XX:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        _log.warning(
            "FHIR transaction to %s: HTTP %d in %.3f s (transient%s)",
            endpoint,
            status,
            elapsed,
            "" if retry_after is None else f", Retry-After {retry_after:.0f} s",
        )
        raise TransientFhirError(
            summary, status_code=status, operation_outcome=outcome_text, retry_after=retry_after
        )
    _log.warning("FHIR transaction to %s: HTTP %d in %.3f s (permanent)", endpoint, status, elapsed)
    raise PermanentFhirError(summary, status_code=status, operation_outcome=outcome_text)


def _transport_error(exc: httpx.RequestError, endpoint: str, elapsed: float) -> FhirDeliveryError:
    kind = type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            _log.warning(
                "FHIR transaction to %s: TLS certificate refused after %.3f s", endpoint, elapsed
            )
            return PermanentFhirError(
                f"TLS certificate of {endpoint} refused: {cause.verify_message}"
            )
        cause = cause.__cause__ or cause.__context__
    _log.warning("FHIR transaction to %s: %s after %.3f s (transient)", endpoint, kind, elapsed)
    if isinstance(exc, httpx.TimeoutException):
        what = f"timed out ({kind})"
    else:
        what = f"failed: {kind}: {exc}" if str(exc) else f"failed: {kind}"
    return TransientFhirError(f"FHIR transaction to {endpoint} {what}")


# -- the answer ----------------------------------------------------------------


def _json_body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content.decode(response.encoding or "utf-8"))
    except (UnicodeDecodeError, LookupError, json.JSONDecodeError):
        return None


def _status_code(status: Any) -> int | None:
    """The leading 3-digit code of a ``response.status`` ("201 Created" -> 201)."""
    if not isinstance(status, str):
        return None
    head = status.strip().split(" ", 1)[0]
    return int(head) if len(head) == 3 and head.isdigit() else None


def _read_transaction_response(
    response: httpx.Response, request_entries: list[dict[str, Any]]
) -> tuple[FhirEntryResult, ...]:
    status = response.status_code
    content_type = response.headers.get("Content-Type", "(none)")
    data = _json_body(response)
    if data is None:
        raise InvalidFhirResponseError(
            f"HTTP {status} but the body is not JSON (Content-Type {content_type}, "
            f"{len(response.content)} bytes); is the base URL a FHIR server?",
            status_code=status,
        )
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        kind = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
        raise InvalidFhirResponseError(
            f"HTTP {status} but the body is a {kind!r}, not a Bundle", status_code=status
        )
    if data.get("type") != "transaction-response":
        raise InvalidFhirResponseError(
            f"HTTP {status} but the Bundle's type is {data.get('type')!r}, "
            "not 'transaction-response'",
            status_code=status,
        )
    entries = data.get("entry") or []
    if not isinstance(entries, list) or len(entries) != len(request_entries):
        count = len(entries) if isinstance(entries, list) else "no list of"
        raise InvalidFhirResponseError(
            f"HTTP {status} but the transaction-response has {count} entries for "
            f"{len(request_entries)} request entries (R4 http.html#transaction-response)",
            status_code=status,
        )
    results = []
    for index, (entry, request_entry) in enumerate(zip(entries, request_entries)):
        answer = entry.get("response") if isinstance(entry, dict) else None
        if not isinstance(answer, dict):
            raise InvalidFhirResponseError(
                f"HTTP {status} but entry {index} of the transaction-response has no response",
                status_code=status,
            )
        entry_status = answer.get("status")
        code = _status_code(entry_status)
        if not isinstance(entry_status, str) or code is None or not 200 <= code < 300:
            raise InvalidFhirResponseError(
                f"HTTP {status} but entry {index} of the transaction-response has status "
                f"{entry_status!r}, not 2xx",
                status_code=status,
            )
        request = _dict_or_empty(request_entry.get("request"))
        resource = _dict_or_empty(request_entry.get("resource"))
        results.append(
            FhirEntryResult(
                status=entry_status,
                status_code=code,
                location=_str_or_none(answer.get("location")),
                etag=_str_or_none(answer.get("etag")),
                last_modified=_str_or_none(answer.get("lastModified")),
                resource_type=_str_or_none(resource.get("resourceType")),
                full_url=_str_or_none(request_entry.get("fullUrl")),
                request_method=_str_or_none(request.get("method")),
                request_url=_str_or_none(request.get("url")),
            )
        )
    return tuple(results)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _truncate_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def _one_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def outcome_summary(operation_outcome: dict[str, Any]) -> str:
    """One line from an OperationOutcome's issues (R4 operationoutcome.html):
    each issue as ``severity/code: diagnostics or details.text [at expression]``,
    errors and fatal issues first, joined by ``; ``."""
    issues = operation_outcome.get("issue")
    if not isinstance(issues, list):
        return "OperationOutcome without issues"
    rank = {"fatal": 0, "error": 1, "warning": 2, "information": 3}
    parts = []
    for issue in sorted(
        (i for i in issues if isinstance(i, dict)),
        key=lambda i: rank.get(str(i.get("severity")), 4),
    ):
        details = _dict_or_empty(issue.get("details"))
        codings = _list_or_empty(details.get("coding"))
        text = (
            _str_or_none(issue.get("diagnostics"))
            or _str_or_none(details.get("text"))
            or next(
                (c.get("display") for c in codings if isinstance(c, dict) and c.get("display")),
                None,
            )
            or ""
        )
        where = issue.get("expression") or issue.get("location")
        at = f" [at {', '.join(map(str, where))}]" if isinstance(where, list) and where else ""
        head = f"{issue.get('severity', '?')}/{issue.get('code', '?')}"
        parts.append(f"{head}: {text}{at}" if text else f"{head}{at}")
    return "; ".join(parts) if parts else "OperationOutcome without issues"


def _describe_failure(response: httpx.Response) -> tuple[str | None, str]:
    """(OperationOutcome text or None, one-line summary) of a non-2xx answer."""
    status = response.status_code
    head = f"HTTP {status} {response.reason_phrase}".rstrip()
    data = _json_body(response)
    if isinstance(data, dict) and data.get("resourceType") == "OperationOutcome":
        text = response.content.decode(response.encoding or "utf-8", errors="replace")
        return _truncate_utf8(text, OPERATION_OUTCOME_LIMIT), _one_line(
            f"{head}: {outcome_summary(data)}"
        )
    if 300 <= status < 400:
        where = response.headers.get("Location")
        return None, _one_line(f"{head}: unexpected redirect{f' to {where}' if where else ''}")
    content_type = response.headers.get("Content-Type", "no Content-Type")
    return None, _one_line(
        f"{head} without an OperationOutcome ({content_type}, {len(response.content)} bytes)"
    )



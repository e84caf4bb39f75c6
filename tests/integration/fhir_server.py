"""A real HTTP FHIR R4 endpoint standing in for the EHR in tests.

No HAPI server can be had here (../shared/TOOLS.md), so :class:`FhirTestServer` plays
one: a :class:`http.server.ThreadingHTTPServer` on 127.0.0.1 (ephemeral port, own
thread) that accepts ``POST [base]`` with a ``transaction`` Bundle and answers the
way a FHIR server does (R4 http.html#transaction):

* all or nothing: entries are planned in R4 order (POST, then PUT), references to
  the Bundle's ``fullUrl`` values are rewritten to the assigned ``Type/id``, and
  nothing is stored unless every entry succeeds;
* ``POST`` with ``ifNoneExist`` is a conditional create (http.html#ccreate): one
  match → ``200 OK`` with the existing resource's location, none → ``201 Created``,
  several → 412; ``PUT Type?identifier=…`` is a conditional update
  (http.html#cond-update): none → create, one → new version, several → 412;
  ``PUT Type/id`` updates or creates that id. Searches support the ``identifier``
  token parameter (system|value, R4 search.html#token, with its escapes);
* the answer is a ``transaction-response`` Bundle: ``response.status``,
  ``location`` ``Type/id/_history/version``, ``etag`` and ``lastModified``.

So a redelivered identical transaction creates no duplicates, and
:meth:`FhirTestServer.resources` lets a test assert "exactly one DiagnosticReport".

Scripting: :meth:`~FhirTestServer.fail_next` (503 or any status, optional
``Retry-After``), :meth:`~FhirTestServer.reject_next` (a 4xx with an
OperationOutcome), :meth:`~FhirTestServer.delay_next` (answer late: client
timeouts), :meth:`~FhirTestServer.drop_response_next` (commit, then close the
connection without answering: a lost response), :meth:`~FhirTestServer.require_auth`
(401 otherwise) and :meth:`~FhirTestServer.set_down` / :meth:`~FhirTestServer.set_up`
(close / reopen the listening socket on the same port: an EHR outage).

:func:`validate_with_npm` runs the project's npm validators
(``tests/fhir_validators/validate.js``) on a Bundle and skips when they are not installed.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

import pytest

__all__ = [
    "FhirTestServer",
    "ReceivedRequest",
    "make_outcome",
    "npm_validator_problems",
    "validate_with_npm",
]

_log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATORS = REPO_ROOT / "tests" / "fhir_validators"
FHIR_JSON = "application/fhir+json"


def make_outcome(code: str, diagnostics: str, *, severity: str = "error") -> dict[str, Any]:
    """A one-issue OperationOutcome (R4 operationoutcome.html)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request the server received.

    ``headers`` has lower-case names; ``json`` is the parsed body (None if it was
    not JSON); ``status`` what the server answered (None: the connection was
    closed without an answer).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int | None


@dataclass(frozen=True)
class _Scripted:
    status: int
    outcome: dict[str, Any] | None
    retry_after: str | None


class _Reject(Exception):
    def __init__(self, status: int, outcome: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.outcome = outcome


# -- identifier search (R4 search.html#token, #escaping) -------------------------


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _raw_split(text: str, separator: str) -> list[str]:
    """Split on unescaped ``separator`` keeping the escapes (for a second split)."""
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == separator:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    return _split_unescaped(text, "\x00")[0]


def _identifier_tokens(query: str) -> list[tuple[str | None, str]]:
    """``[(system or None, value)]`` alternatives of an ``identifier=`` search."""
    tokens: list[tuple[str | None, str]] = []
    for param in query.split("&"):
        name, _, raw = param.partition("=")
        if unquote(name) != "identifier":
            raise _Reject(
                400,
                make_outcome(
                    "not-supported",
                    f"search parameter {unquote(name)!r} is not supported by the test server",
                ),
            )
        for alternative in _raw_split(unquote(raw), ","):
            pieces = _raw_split(alternative, "|")
            if len(pieces) == 1:
                tokens.append((None, _unescape(pieces[0])))
            elif len(pieces) == 2:
                system, value = (_unescape(p) for p in pieces)
                tokens.append((system, value))
            else:
                raise _Reject(400, make_outcome("invalid", f"bad identifier token {alternative!r}"))
    if not tokens:
        raise _Reject(400, make_outcome("invalid", "empty search"))
    return tokens


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    value = resource.get("identifier")
    if isinstance(value, dict):
        return [value]
    return [i for i in value if isinstance(i, dict)] if isinstance(value, list) else []


def _matches(resource: dict[str, Any], tokens: list[tuple[str | None, str]]) -> bool:
    for identifier in _identifiers(resource):
        for system, value in tokens:
            if identifier.get("value") != value:
                continue
            if system is None or identifier.get("system", "") == system:
                return True
    return False


def _rewrite_references(node: Any, id_map: dict[str, str], unresolved: list[str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in id_map:
                    value = id_map[value]
                elif value.startswith(("urn:uuid:", "urn:oid:")):
                    unresolved.append(value)
            out[key] = _rewrite_references(value, id_map, unresolved)
        return out
    if isinstance(node, list):
        return [_rewrite_references(item, id_map, unresolved) for item in node]
    return node


# -- the server ------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("fhir test server: " + format, *args)

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def do_GET(self) -> None:
        self.server.owner._answer_only(self, 405, make_outcome(
            "not-supported", "the test server only accepts POST [base] transactions"))

    do_PUT = do_DELETE = do_PATCH = do_GET

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{FHIR_JSON}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: FhirTestServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out and hung up: expected in the timeout tests
        _log.debug(
            "fhir test server: connection from %s ended with an error",
            client_address,
            exc_info=True,
        )


def _self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed for the TLS test server)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class FhirTestServer:
    """A FHIR R4 transaction endpoint on 127.0.0.1 (see the module docstring).

    Use as a context manager; :attr:`base_url` is ``http://127.0.0.1:PORT/fhir``
    (``https://`` with ``tls=True``: a fresh self-signed certificate, :attr:`ca_file`).
    """

    def __init__(self, *, base_path: str = "/fhir", tls: bool = False) -> None:
        self._base_path = "/" + base_path.strip("/")
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._tls_context: ssl.SSLContext | None = None
        if tls:
            self._tls_dir = tempfile.TemporaryDirectory(prefix="fhir-test-tls-")
            self._tls_context = _self_signed_context(Path(self._tls_dir.name))
        self._lock = threading.Lock()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._connections: set[socket.socket] = set()
        self._release = threading.Event()
        self._received: list[ReceivedRequest] = []
        self._store: dict[str, dict[str, dict[str, Any]]] = {}
        self._next_id = 1
        self._script: deque[_Scripted] = deque()
        self._delays: deque[float] = deque()
        self._drops = 0
        self._auth: str | None = None
        self._auth_scheme = "Bearer"

    # lifecycle

    def __enter__(self) -> Self:
        self.set_up()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.set_down()
        if self._tls_dir is not None:
            self._tls_dir.cleanup()

    @property
    def ca_file(self) -> Path:
        """The server's self-signed certificate (PEM), for a client's trust store
        (``httpx.Client(verify=ssl.create_default_context(cafile=server.ca_file))``)."""
        if self._tls_dir is None:
            raise RuntimeError("FhirTestServer was made without tls=True")
        return Path(self._tls_dir.name) / "cert.pem"

    def require_client_certificate(self, ca_file: Path) -> None:
        """Mutual TLS: refuse a client without a certificate signed by a CA of ``ca_file``."""
        if self._tls_context is None:
            raise RuntimeError("FhirTestServer was made without tls=True")
        self._tls_context.verify_mode = ssl.CERT_REQUIRED
        self._tls_context.load_verify_locations(cafile=str(ca_file))

    @property
    def base_url(self) -> str:
        """The service base URL (R4 http.html#root)."""
        if self._port is None:
            raise RuntimeError("FhirTestServer is not started")
        scheme = "https" if self._tls_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._port}{self._base_path}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FhirTestServer is not started")
        return self._port

    def set_up(self) -> None:
        """Listen (again, on the same port after :meth:`set_down`)."""
        if self._server is not None:
            return
        self._release.clear()
        server = _HttpServer(("127.0.0.1", self._port or 0), self)
        if self._tls_context is not None:
            # handshake in the handler thread, not in the accept loop
            server.socket = self._tls_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fhir-test-server",
            daemon=True,
        )
        self._thread.start()

    def set_down(self) -> None:
        """Stop listening and close open connections: clients get "connection refused"."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._release.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        if thread is not None:
            thread.join(timeout=5)

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    # scripting

    def fail_next(
        self, n: int = 1, status: int = 503, *, retry_after: int | str | None = None,
        operation_outcome: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (default 503 Service Unavailable),
        an OperationOutcome and, if given, ``Retry-After``; nothing is stored."""
        outcome = operation_outcome or make_outcome(
            "transient", f"scripted failure {status} from the FHIR test server")
        with self._lock:
            for _ in range(n):
                self._script.append(
                    _Scripted(status, outcome, None if retry_after is None else str(retry_after))
                )

    def reject_next(
        self, status: int = 400, operation_outcome: dict[str, Any] | None = None
    ) -> None:
        """Answer the next request with ``status`` and ``operation_outcome``."""
        outcome = operation_outcome or make_outcome(
            "invalid", f"scripted rejection {status} from the FHIR test server")
        with self._lock:
            self._script.append(_Scripted(status, outcome, None))

    def delay_next(self, seconds: float, n: int = 1) -> None:
        """Wait ``seconds`` before answering each of the next ``n`` requests."""
        with self._lock:
            self._delays.extend([seconds] * n)

    def drop_response_next(self, n: int = 1) -> None:
        """Process (and commit) the next ``n`` transactions, then close the connection
        without answering: the client never learns the outcome (a lost response)."""
        with self._lock:
            self._drops += n

    def require_auth(
        self, *, bearer: str | None = None, basic: tuple[str, str] | None = None
    ) -> None:
        """Answer 401 unless ``Authorization`` carries this bearer token or user and
        password; with neither, stop requiring authentication."""
        if bearer is not None and basic is not None:
            raise ValueError("require_auth takes bearer or basic, not both")
        with self._lock:
            if bearer is not None:
                self._auth, self._auth_scheme = f"Bearer {bearer}", "Bearer"
            elif basic is not None:
                raw = f"{basic[0]}:{basic[1]}".encode()
                self._auth, self._auth_scheme = (
                    "Basic " + base64.b64encode(raw).decode("ascii"),
                    "Basic",
                )
            else:
                self._auth = None

    # inspection

    @property
    def received(self) -> list[ReceivedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._received)

    @property
    def transactions(self) -> list[ReceivedRequest]:
        """The requests whose transaction was committed (answered 200, or dropped after commit)."""
        with self._lock:
            return [r for r in self._received if r.status in (200, None)]

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        """Copies of the stored resources of one type (references rewritten to ``Type/id``)."""
        with self._lock:
            return copy.deepcopy(list(self._store.get(resource_type, {}).values()))

    def resource(self, reference: str) -> dict[str, Any]:
        """The stored resource ``Type/id`` (a ``_history`` suffix is ignored)."""
        resource_type, resource_id = reference.split("/")[:2]
        with self._lock:
            return copy.deepcopy(self._store[resource_type][resource_id])

    def validate_with_npm(self, bundle_json: str | bytes) -> list[str]:
        """:func:`validate_with_npm` (the npm validators' problems; skips if absent)."""
        return validate_with_npm(bundle_json)

    # request handling (handler threads)

    def _answer_only(self, handler: _Handler, status: int, outcome: dict[str, Any]) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        self._record(handler, body, None, status)
        handler.send_json(status, outcome)

    def _record(self, handler: _Handler, body: bytes, parsed: Any, status: int | None) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._lock:
            self._received.append(
                ReceivedRequest(handler.command, handler.path, headers, body, parsed, status)
            )

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = None
        with self._lock:
            delay = self._delays.popleft() if self._delays else 0.0
        if delay and self._release.wait(delay):
            return  # set_down while waiting: no answer
        with self._lock:
            scripted = self._script.popleft() if self._script else None
            expected_auth = self._auth
            scheme = self._auth_scheme
        if scripted is not None:
            self._record(handler, body, parsed, scripted.status)
            extra = (
                {"Retry-After": scripted.retry_after} if scripted.retry_after is not None else None
            )
            handler.send_json(scripted.status, scripted.outcome, extra)
            return
        if expected_auth is not None and handler.headers.get("Authorization") != expected_auth:
            self._record(handler, body, parsed, 401)
            handler.send_json(401, make_outcome("login", "authentication required"),
                              {"WWW-Authenticate": f'{scheme} realm="fhir"'})
            return
        try:
            if handler.path.split("?")[0].rstrip("/") != self._base_path:
                raise _Reject(404, make_outcome("not-found", f"no endpoint at {handler.path}"))
            content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type not in (FHIR_JSON, "application/json"):
                raise _Reject(
                    415, make_outcome("not-supported", f"unsupported Content-Type {content_type!r}")
                )
            if parsed is None:
                raise _Reject(400, make_outcome("structure", "the body is not UTF-8 JSON"))
            with self._lock:
                answer = self._transaction(parsed)
                drop = self._drops > 0
                if drop:
                    self._drops -= 1
        except _Reject as reject:
            self._record(handler, body, parsed, reject.status)
            handler.send_json(reject.status, reject.outcome)
            return
        if drop:
            self._record(handler, body, parsed, None)
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        self._record(handler, body, parsed, 200)
        handler.send_json(200, answer)

    # the transaction (called with the lock held)

    def _search(self, resource_type: str, query: str) -> list[str]:
        tokens = _identifier_tokens(query)
        return [
            rid for rid, res in self._store.get(resource_type, {}).items() if _matches(res, tokens)
        ]

    def _new_id(self) -> str:
        rid = str(self._next_id)
        self._next_id += 1
        return rid

    def _transaction(self, bundle: Any) -> dict[str, Any]:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise _Reject(400, make_outcome("structure", "the body is not a Bundle"))
        if bundle.get("type") != "transaction":
            raise _Reject(
                400,
                make_outcome(
                    "not-supported",
                    f"Bundle type {bundle.get('type')!r}: the test server only takes transactions",
                ),
            )
        entries = bundle.get("entry") or []
        order = {"POST": 0, "PUT": 1}
        # (type, id, status, version)
        plans: list[tuple[str, str, str, int] | None] = [None] * len(entries)
        id_map: dict[str, str] = {}
        writes: list[int] = []
        planned_writes: set[tuple[str, str]] = set()
        for index in sorted(
            range(len(entries)), key=lambda i: order.get(self._method(entries, i), 9)
        ):
            entry = entries[index]
            method = self._method(entries, index)
            request = entry["request"]
            resource = entry.get("resource")
            url = request.get("url", "")
            if method not in order:
                raise _Reject(
                    400,
                    make_outcome(
                        "not-supported",
                        f"entry {index}: method {method!r} is not supported by the test server",
                    ),
                )
            if not isinstance(resource, dict):
                raise _Reject(
                    400, make_outcome("required", f"entry {index}: {method} without a resource")
                )
            resource_type = resource.get("resourceType")
            target_type, _, rest = url.partition("?") if "?" in url else url.partition("/")
            if target_type != resource_type:
                raise _Reject(
                    400,
                    make_outcome(
                        "invalid",
                        f"entry {index}: request.url {target_type!r} does not match "
                        f"{resource_type!r}",
                    ),
                )
            if method == "POST":
                if "/" in url:
                    raise _Reject(
                        400, make_outcome("invalid", f"entry {index}: POST to an instance URL")
                    )
                if request.get("ifNoneExist"):
                    matches = self._search(resource_type, request["ifNoneExist"])
                    if len(matches) > 1:
                        raise _Reject(
                            412,
                            make_outcome(
                                "duplicate",
                                f"entry {index}: ifNoneExist matches {len(matches)} resources",
                            ),
                        )
                    if matches:
                        version = int(self._store[resource_type][matches[0]]["meta"]["versionId"])
                        plans[index] = (resource_type, matches[0], "200 OK", version)
                    else:
                        plans[index] = (resource_type, self._new_id(), "201 Created", 1)
                        writes.append(index)
                else:
                    plans[index] = (resource_type, self._new_id(), "201 Created", 1)
                    writes.append(index)
            else:
                if "?" in url:
                    matches = self._search(resource_type, rest)
                    if len(matches) > 1:
                        raise _Reject(
                            412,
                            make_outcome(
                                "multiple-matches",
                                f"entry {index}: conditional update matches "
                                f"{len(matches)} resources",
                            ),
                        )
                    target_id = matches[0] if matches else None
                else:
                    target_id = rest or None
                    if not target_id:
                        raise _Reject(
                            400, make_outcome("invalid", f"entry {index}: PUT without an id")
                        )
                existing = self._store.get(resource_type, {}).get(target_id) if target_id else None
                if target_id is not None and (resource_type, target_id) in planned_writes:
                    raise _Reject(
                        409,
                        make_outcome("conflict", f"entry {index}: two entries write one resource"),
                    )
                if existing is not None:
                    plans[index] = (
                        resource_type,
                        target_id,
                        "200 OK",
                        int(existing["meta"]["versionId"]) + 1,
                    )
                else:
                    plans[index] = (resource_type, target_id or self._new_id(), "201 Created", 1)
                planned_writes.add((resource_type, plans[index][1]))
                writes.append(index)
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str):
                id_map[full_url] = f"{resource_type}/{plans[index][1]}"

        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        staged: list[tuple[str, str, dict[str, Any]]] = []
        for index in writes:
            resource_type, rid, _, version = plans[index]  # type: ignore[misc]
            unresolved: list[str] = []
            stored = _rewrite_references(entries[index]["resource"], id_map, unresolved)
            if unresolved:
                raise _Reject(
                    400,
                    make_outcome(
                        "not-found",
                        f"entry {index}: unresolved reference(s) "
                        f"{', '.join(sorted(set(unresolved)))}",
                    ),
                )
            stored["id"] = rid
            stored["meta"] = {
                **stored.get("meta", {}),
                "versionId": str(version),
                "lastUpdated": now,
            }
            staged.append((resource_type, rid, stored))
        for resource_type, rid, stored in staged:  # all entries succeeded: commit
            self._store.setdefault(resource_type, {})[rid] = stored

        response_entries = []
        for plan in plans:
            resource_type, rid, status, version = plan  # type: ignore[misc]
            stored = self._store[resource_type][rid]
            response_entries.append({"response": {
                "status": status,
                "location": f"{resource_type}/{rid}/_history/{version}",
                "etag": f'W/"{version}"',
                "lastModified": stored["meta"]["lastUpdated"],
            }})
        return {
            "resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "transaction-response",
            "entry": response_entries,
        }

    @staticmethod
    def _method(entries: list[Any], index: int) -> str:
        entry = entries[index]
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            raise _Reject(400, make_outcome("required", f"entry {index} has no request"))
        return str(entry["request"].get("method", "")).upper()


# -- the npm validators ----------------------------------------------------------


def npm_validator_problems(result: dict[str, Any]) -> list[str]:
    """Schema errors, FHIR.js errors, and FHIR.js warnings other than the "not found in
    value set" ones it gives for code systems it does not ship (LOINC, SNOMED CT, DICOM)
    in one ``validate.js`` result (see tests/fhir_validators/README.md)."""
    problems = []
    for item in result["items"]:
        problems += [f"{item['path']} schema: {m}" for m in item["schema"]]
        problems += [
            f"{item['path']} FHIR.js: {m}" for m in item["fhirjs"]
            if m.startswith("error") or "not found in value set" not in m
        ]
    return problems


def validate_with_npm(bundle_json: str | bytes) -> list[str]:
    """Validate a Bundle with ``tests/fhir_validators/validate.js`` (official R4 JSON
    schema and FHIR.js, per entry) and return its problems (empty: valid).

    Skips the calling test when ``node`` or the validators' ``node_modules`` are missing.
    """
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (needed for the npm FHIR validators)")
    if not (VALIDATORS / "node_modules").is_dir():
        pytest.skip(f"npm FHIR validators not installed: run `npm ci` in {VALIDATORS}")
    data = bundle_json.encode("utf-8") if isinstance(bundle_json, str) else bytes(bundle_json)
    with tempfile.TemporaryDirectory(prefix="fhir-validate-") as tmp:
        path = Path(tmp) / "bundle.json"
        path.write_bytes(data)
        done = subprocess.run(
            [node, str(VALIDATORS / "validate.js"), str(path)],
            capture_output=True, text=True, timeout=120, check=False,
        )
    if done.returncode != 0:
        raise AssertionError(f"validate.js failed ({done.returncode}): {done.stderr.strip()}")
    (result,) = json.loads(done.stdout)
    return npm_validator_problems(result)


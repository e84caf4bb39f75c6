"""FHIR delivery: a transaction Bundle POSTed to a real HTTP endpoint (FhirTestServer),
errors classified as the delivery task needs them, and the retry delay policy."""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from exporters.fhir import build_fhir_bundle, bundle_json
from tests.integration.fhir_server import FhirTestServer, make_outcome
from tests.unit.exporters.conftest import IMAGE_SIZES, make_grounded_report, make_source_image
from worklist.destinations import RetryPolicy
from worklist.destinations.fhir import (
    FhirDeliveryError,
    InvalidFhirResponseError,
    PermanentFhirError,
    TransientFhirError,
    parse_retry_after,
    post_transaction,
)
from worklist.destinations.security import HttpAuth

SITE_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1234"
RESOURCE_TYPES = ("Patient", "Device", "ImagingStudy", "DiagnosticReport", "Observation")


def realistic_bundle(*, revision: int = 1) -> str:
    """The exporter tests' 20-finding bilingual report on their two DX images, as
    :func:`exporters.fhir.build_fhir_bundle` sends it (headers only: no pixels needed)."""
    sources = [
        make_source_image(i, pixels=np.zeros((rows, columns), dtype=np.uint16))
        for i, (columns, rows) in enumerate(IMAGE_SIZES)
    ]
    return bundle_json(
        build_fhir_bundle(
            make_grounded_report(),
            sources,
            revision=revision,
            patient_identifier_system=SITE_SYSTEM,
        )
    )


@pytest.fixture(scope="module")
def bundle() -> str:
    return realistic_bundle()


@pytest.fixture
def server():
    with FhirTestServer() as fhir:
        yield fhir


def _counts(server: FhirTestServer) -> dict[str, int]:
    return {t: len(server.resources(t)) for t in RESOURCE_TYPES}


ONE_OF_EACH = {
    "Patient": 1,
    "Device": 1,
    "ImagingStudy": 1,
    "DiagnosticReport": 1,
    "Observation": 20,
}


# -- success -----------------------------------------------------------------


def test_success_posts_fhir_json_with_bearer_token(server, bundle):
    server.require_auth(bearer="tok-3f9a")
    result = post_transaction(
        server.base_url,
        bundle,
        auth=HttpAuth.bearer("tok-3f9a"),
        timeout=10,
        request_id="delivery-17",
    )

    assert result.status_code == 200
    entries = json.loads(bundle)["entry"]
    assert len(result.entries) == len(entries) == 24
    assert all(e.status == "201 Created" and e.status_code == 201 for e in result.entries)
    assert result.created == 24
    for entry, answer in zip(entries, result.entries, strict=True):
        assert answer.full_url == entry["fullUrl"]
        assert answer.resource_type == entry["resource"]["resourceType"]
        assert answer.request_method == entry["request"]["method"]
        assert answer.location.startswith(f"{answer.resource_type}/")
        assert server.resource(answer.location)["resourceType"] == answer.resource_type
    (request,) = server.received
    assert request.method == "POST" and request.path == "/fhir"
    assert request.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert request.headers["accept"] == "application/fhir+json"
    assert request.headers["authorization"] == "Bearer tok-3f9a"
    assert request.headers["x-request-id"] == "delivery-17"
    assert request.body == bundle.encode("utf-8")  # sent as is, Chinese text as UTF-8
    assert _counts(server) == ONE_OF_EACH
    # the server resolved the Bundle's urn:uuid references to the ids it assigned
    (report,) = server.resources("DiagnosticReport")
    patient_location = result.entries[0].location
    assert report["subject"]["reference"] == "/".join(patient_location.split("/")[:2])


def test_basic_auth_utf8_and_trailing_slash(server, bundle):
    server.require_auth(basic=("radground", "pä:ss wörd"))
    result = post_transaction(
        server.base_url + "/",
        bundle.encode("utf-8"),
        auth=HttpAuth.basic("radground", "pä:ss wörd"),
    )
    assert result.status_code == 200
    assert server.received[0].path == "/fhir"  # POST [base], not [base]/


def test_caller_owned_client_is_reused_and_left_open(server, bundle):
    with httpx.Client() as client:
        first = post_transaction(server.base_url, bundle, auth=HttpAuth.none(), client=client)
        second = post_transaction(server.base_url, bundle, auth=HttpAuth.none(), client=client)
        assert not client.is_closed
    assert first.created == 24 and second.created == 0


# -- idempotent redelivery ---------------------------------------------------


def test_redelivered_identical_transaction_creates_no_duplicates(server, bundle):
    first = post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    second = post_transaction(server.base_url, bundle, auth=HttpAuth.none())

    assert _counts(server) == ONE_OF_EACH
    assert {e.status for e in second.entries} == {"200 OK"}
    # same resources; ours (report, observations) updated in place, the rest untouched
    for a, b in zip(first.entries, second.entries, strict=True):
        assert a.location.split("/")[:2] == b.location.split("/")[:2]
        expected_version = "2" if a.request_method == "PUT" else "1"
        assert b.location.endswith(f"/_history/{expected_version}")


def test_lost_response_then_redelivery_creates_no_duplicates(server, bundle):
    """The EHR commits but the answer never arrives: transient, and the retry is safe."""
    server.drop_response_next()
    with pytest.raises(TransientFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none(), timeout=5)
    assert info.value.status_code is None
    assert _counts(server) == ONE_OF_EACH  # it was committed

    result = post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    assert {e.status for e in result.entries} == {"200 OK"}
    assert _counts(server) == ONE_OF_EACH


# -- transient errors and the caller's retry loop ----------------------------


def test_503_three_times_then_ok_with_retry_loop(server, bundle):
    server.fail_next(3, status=503)
    rng = random.Random(5)
    errors = []
    for attempt in range(1, 6):
        try:
            result = post_transaction(server.base_url, bundle, auth=HttpAuth.none())
            break
        except TransientFhirError as exc:
            errors.append(exc)
            time.sleep(RetryPolicy(base_seconds=0.01, cap_seconds=0.05).delay(
                attempt, retry_after=exc.retry_after, rng=rng))
    else:
        pytest.fail("no success after 5 attempts")

    assert attempt == 4
    assert [e.status_code for e in errors] == [503, 503, 503]
    assert all("HTTP 503" in e.summary and "scripted failure 503" in e.summary for e in errors)
    assert result.created == 24
    assert [r.status for r in server.received] == [503, 503, 503, 200]
    assert _counts(server) == ONE_OF_EACH


@pytest.mark.parametrize("status", [500, 502, 504, 429, 408])
def test_5xx_429_408_are_transient(server, bundle, status):
    server.fail_next(1, status=status)
    with pytest.raises(TransientFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    assert info.value.status_code == status
    assert json.loads(info.value.operation_outcome)["resourceType"] == "OperationOutcome"
    assert _counts(server)["DiagnosticReport"] == 0


def test_retry_after_seconds_is_exposed_and_floors_the_delay(server, bundle):
    server.fail_next(1, status=429, retry_after=7)
    with pytest.raises(TransientFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    assert info.value.retry_after == 7.0
    rng = random.Random(1)
    policy = RetryPolicy(base_seconds=2.0)
    delays = [policy.delay(1, retry_after=info.value.retry_after, rng=rng) for _ in range(200)]
    assert min(delays) >= 7.0  # the backoff alone would be at most 2 s
    assert max(delays) == 7.0


def test_retry_after_http_date(server, bundle):
    server.fail_next(1, status=503, retry_after="Wed, 21 Oct 2099 07:28:00 GMT")
    with pytest.raises(TransientFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    assert info.value.retry_after > 365 * 24 * 3600
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:02:00 GMT", now=now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after(" 30 ") == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_connection_refused_is_transient_and_the_server_comes_back(server, bundle):
    url = server.base_url
    server.set_down()
    with pytest.raises(TransientFhirError) as info:
        post_transaction(url, bundle, auth=HttpAuth.none(), timeout=5)
    assert info.value.status_code is None
    assert "ConnectError" in info.value.summary
    server.set_up()
    assert server.base_url == url
    assert post_transaction(url, bundle, auth=HttpAuth.none()).created == 24


def test_nothing_listening_is_transient():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(TransientFhirError):
            post_transaction(
                f"http://127.0.0.1:{port}/fhir", realistic_bundle(), auth=HttpAuth.none()
            )


def test_timeout_is_transient_and_a_late_commit_is_not_duplicated(server, bundle):
    server.delay_next(1.0)
    with pytest.raises(TransientFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none(), timeout=0.2)
    assert info.value.status_code is None
    assert "timed out" in info.value.summary
    # the retry races the slow first request, which the server still commits
    post_transaction(server.base_url, bundle, auth=HttpAuth.none(), timeout=5)
    deadline = time.monotonic() + 5
    while len(server.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.status for r in server.received] == [200, 200]
    assert _counts(server) == ONE_OF_EACH


# -- permanent errors --------------------------------------------------------


def test_400_with_operation_outcome_is_permanent_with_its_diagnostics(server, bundle):
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "warning",
                "code": "informational",
                "diagnostics": "Unknown extension ignored",
            },
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "Observation.status: 'unverified' is not in\nhttp://hl7.org/fhir/ValueSet/observation-status",
                "expression": ["Bundle.entry[4].resource.status"],
            },
        ],
    }
    server.reject_next(400, outcome)
    with pytest.raises(PermanentFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    error = info.value
    assert error.status_code == 400
    assert json.loads(error.operation_outcome) == outcome
    assert "\n" not in error.summary
    assert error.summary.startswith(
        "HTTP 400 Bad Request: error/code-invalid: Observation.status: 'unverified'"
    )
    assert "[at Bundle.entry[4].resource.status]" in error.summary
    assert error.summary.index("error/") < error.summary.index("warning/")  # errors first
    assert str(error) == error.summary
    assert _counts(server)["DiagnosticReport"] == 0


@pytest.mark.parametrize("status", [403, 404, 409, 412, 422, 501])
def test_other_4xx_are_permanent(server, bundle, status):
    server.reject_next(status, make_outcome("processing", f"refused with {status}"))
    with pytest.raises(PermanentFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    assert not isinstance(info.value, TransientFhirError)
    assert info.value.status_code == status
    assert f"refused with {status}" in info.value.summary


def test_operation_outcome_is_kept_up_to_64_kb(server, bundle):
    server.reject_next(422, make_outcome("invariant", "错误" * 40_000))  # 240 KB of UTF-8
    with pytest.raises(PermanentFhirError) as info:
        post_transaction(server.base_url, bundle, auth=HttpAuth.none())
    kept = info.value.operation_outcome.encode("utf-8")
    assert 64 * 1024 - 3 <= len(kept) <= 64 * 1024  # cut at a character boundary
    assert kept.decode("utf-8").startswith('{"resourceType": "OperationOutcome"')
    assert len(info.value.summary) <= 500


def test_bad_or_missing_credentials_are_permanent_401(server, bundle):
    server.require_auth(bearer="right-token")
    for auth in (
        HttpAuth.bearer("wrong-token"),
        HttpAuth.none(),
        HttpAuth.basic("u", "right-token"),
    ):
        with pytest.raises(PermanentFhirError) as info:
            post_transaction(server.base_url, bundle, auth=auth)
        assert info.value.status_code == 401
        assert "authentication required" in info.value.summary
    assert _counts(server)["Patient"] == 0


def test_https_needs_a_trusted_certificate(bundle):
    """An unknown certificate is permanent (retrying cannot fix trust); the caller's
    client carries the EHR's CA."""
    with FhirTestServer(tls=True) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        with pytest.raises(PermanentFhirError) as info:
            post_transaction(server.base_url, bundle, auth=HttpAuth.bearer("t"), timeout=5)
        assert info.value.status_code is None
        assert "TLS certificate of https://127.0.0.1" in info.value.summary
        assert "self-signed" in info.value.summary
        trusted = ssl.create_default_context(cafile=str(server.ca_file))
        with httpx.Client(verify=trusted) as client:
            result = post_transaction(
                server.base_url, bundle, auth=HttpAuth.bearer("t"), client=client
            )
        assert result.created == 24
        assert server.received[-1].headers["authorization"] == "Bearer t"


def _mock_client(
    status: int, body: bytes | str, headers: dict[str, str] | None = None
) -> httpx.Client:
    content = body.encode("utf-8") if isinstance(body, str) else body

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers or {})

    return httpx.Client(transport=httpx.MockTransport(answer))


def _response_bundle(statuses: list[str], kind: str = "transaction-response") -> str:
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {"response": {"status": s, "location": f"Observation/{n}"}}
                for n, s in enumerate(statuses)
            ],
        }
    )


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ("<html>Sign in</html>", {"Content-Type": "text/html"}, "not JSON (Content-Type text/html"),
        (json.dumps(make_outcome("informational", "ok")), {}, "'OperationOutcome', not a Bundle"),
        (_response_bundle(["200 OK"] * 24, kind="batch-response"), {}, "type is 'batch-response'"),
        (_response_bundle(["201 Created"] * 3), {}, "has 3 entries for 24 request entries"),
        (
            _response_bundle(["201 Created"] * 5 + ["400 Bad Request"] + ["201 Created"] * 18),
            {},
            "entry 5 of the transaction-response has status '400 Bad Request', not 2xx",
        ),
        (
            _response_bundle(["Created"] * 24),
            {},
            "entry 0 of the transaction-response has status 'Created'",
        ),
    ],
)
def test_2xx_without_a_good_transaction_response_is_invalid(bundle, body, headers, message):
    with (
        _mock_client(200, body, headers) as client,
        pytest.raises(InvalidFhirResponseError) as info,
    ):
        post_transaction(
            "https://ehr.example.org/fhir", bundle, auth=HttpAuth.none(), client=client
        )
    assert isinstance(info.value, PermanentFhirError)
    assert info.value.status_code == 200
    assert message in info.value.summary


def test_redirect_is_not_followed_and_is_permanent(bundle):
    redirect = _mock_client(307, b"", {"Location": "https://elsewhere.example.org/fhir"})
    with redirect as client, pytest.raises(PermanentFhirError) as info:
        post_transaction(
            "https://ehr.example.org/fhir", bundle, auth=HttpAuth.bearer("t"), client=client
        )
    assert info.value.status_code == 307
    assert "unexpected redirect to https://elsewhere.example.org/fhir" in info.value.summary


def test_5xx_without_operation_outcome_is_transient_with_a_summary(bundle):
    gateway = _mock_client(502, "<html>Bad gateway</html>", {"Content-Type": "text/html"})
    with gateway as client, pytest.raises(TransientFhirError) as info:
        post_transaction(
            "https://ehr.example.org/fhir", bundle, auth=HttpAuth.none(), client=client
        )
    assert info.value.operation_outcome is None
    assert (
        info.value.summary
        == "HTTP 502 Bad Gateway without an OperationOutcome (text/html, 24 bytes)"
    )


def test_undecodable_response_body_is_transient(bundle):
    corrupt = _mock_client(200, b"not gzip at all", {"Content-Encoding": "gzip"})
    with corrupt as client, pytest.raises(TransientFhirError) as info:
        post_transaction(
            "https://ehr.example.org/fhir", bundle, auth=HttpAuth.none(), client=client
        )
    assert "DecodingError" in info.value.summary


# -- arguments ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("ftp://ehr.example.org/fhir", r"absolute http\(s\) URL"),
        ("/fhir", r"absolute http\(s\) URL"),
        ("https://user:pw@ehr.example.org/fhir", "must not carry credentials"),
        ("https://ehr.example.org/fhir?x=1", "query"),
    ],
)
def test_bad_base_url_is_refused(bundle, base_url, message):
    with pytest.raises(ValueError, match=message):
        post_transaction(base_url, bundle, auth=HttpAuth.none())


def test_bad_bundle_timeout_and_auth_are_refused(bundle):
    url = "https://ehr.example.org/fhir"
    batch = json.dumps({**json.loads(bundle), "type": "batch"})
    with pytest.raises(ValueError, match="'batch' Bundle, not a 'transaction'"):
        post_transaction(url, batch, auth=HttpAuth.none())
    with pytest.raises(ValueError, match="not a FHIR Bundle"):
        post_transaction(url, json.dumps(make_outcome("x", "y")), auth=HttpAuth.none())
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        post_transaction(url, bundle.encode("utf-16"), auth=HttpAuth.none())
    with pytest.raises(ValueError, match="timeout"):
        post_transaction(url, bundle, auth=HttpAuth.none(), timeout=0)
    with pytest.raises(ValueError, match="request_id must not contain control characters"):
        post_transaction(url, bundle, auth=HttpAuth.none(), request_id="a\r\nX-Evil: 1")
    with pytest.raises(TypeError, match="auth must be a HttpAuth"):
        post_transaction(url, bundle, auth="Bearer x")  # type: ignore[arg-type]


def test_errors_share_one_base():
    assert issubclass(TransientFhirError, FhirDeliveryError)
    assert issubclass(PermanentFhirError, FhirDeliveryError)
    assert not issubclass(TransientFhirError, PermanentFhirError)


# -- authentication values ---------------------------------------------------


def test_auth_repr_never_shows_secrets():
    bearer = HttpAuth.bearer("s3cr3t-token")
    basic = HttpAuth.basic("radground", "hunter2")
    for auth in (bearer, basic):
        for text in (repr(auth), str(auth), f"{auth}", repr([auth])):
            assert "s3cr3t" not in text and "hunter2" not in text
    assert repr(basic) == "HttpAuth(kind='basic', username='radground', password=***)"
    assert bearer.headers() == {"Authorization": "Bearer s3cr3t-token"}
    assert basic.headers() == {"Authorization": "Basic cmFkZ3JvdW5kOmh1bnRlcjI="}
    assert HttpAuth.none().headers() == {}
    with pytest.raises(AttributeError):
        bearer.token = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: HttpAuth.bearer(""), "token must be a non-empty string"),
        (lambda: HttpAuth.bearer("abc\r\nX-Evil: 1"), "control characters"),
        (lambda: HttpAuth.bearer("two words"), "whitespace"),
        (lambda: HttpAuth.basic("a:b", "pw"), "must not contain ':'"),
        (lambda: HttpAuth.basic("user", "pw\n"), "control characters"),
        (lambda: HttpAuth("none", token="t"), "takes no token"),
        (lambda: HttpAuth("bearer", token="t", username="u"), "token only"),
        (lambda: HttpAuth("digest"), "digest"),
    ],
)
def test_bad_auth_values_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- logging -----------------------------------------------------------------


def test_logs_carry_statuses_and_durations_only(server, bundle, caplog):
    caplog.set_level(logging.DEBUG, logger="worklist.destinations.fhir")
    server.require_auth(basic=("radground", "hunter2"))
    auth = HttpAuth.basic("radground", "hunter2")
    post_transaction(server.base_url, bundle, auth=auth)
    server.reject_next(400, make_outcome("invalid", "Patient RG-0042 Zhang Wei rejected"))
    with pytest.raises(PermanentFhirError):
        post_transaction(server.base_url, bundle, auth=auth)
    server.fail_next(1)
    with pytest.raises(TransientFhirError):
        post_transaction(server.base_url, bundle, auth=auth)

    records = [r for r in caplog.records if r.name == "worklist.destinations.fhir"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING, logging.WARNING]
    assert "HTTP 200" in records[0].getMessage() and "HTTP 400" in records[1].getMessage()
    text = "\n".join(r.getMessage() for r in records)
    for secret in (
        "hunter2",
        "cmFkZ3JvdW5kOmh1bnRlcjI",
        "RG-0042",
        "Zhang",
        "张",
        "右肺",
        "cardiothoracic",
    ):
        assert secret not in text

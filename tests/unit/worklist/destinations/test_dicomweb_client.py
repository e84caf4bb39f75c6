"""STOW-RS client: the request it sends and how it reads every kind of answer.

The peer is an :class:`httpx.MockTransport` handler here, so each row of the
classification table (PS3.18 §10.5.3 failure reasons, HTTP statuses) gets an
exact answer; tests/integration/test_dicomweb_stow.py runs against a real
Orthanc DICOMweb server.
"""

from __future__ import annotations

import email.parser
import email.policy
import json

import httpx
import pytest
from pydicom import dcmread

from tests.factories import write_series
from worklist.destinations import (
    HttpAuth,
    InstanceOutcome,
    TlsOptions,
    classify_failure_reason,
    make_client,
    store_instances,
)

BASE = "https://pacs.example.org/dicom-web"


@pytest.fixture
def files(tmp_path):
    return write_series(tmp_path, 3, rows=8, columns=8)


def uids(files):
    return [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]


def item(uid, **extra):
    out = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
           "00081155": {"vr": "UI", "Value": [uid]}}
    for tag, (vr, value) in extra.items():
        out[tag] = {"vr": vr, "Value": [value]}
    return out


def answer(status, *, referenced=(), failed=(), headers=None):
    body = {"00081198": {"vr": "SQ", "Value": list(failed)} if failed else {"vr": "SQ"},
            "00081199": {"vr": "SQ", "Value": list(referenced)} if referenced else {"vr": "SQ"}}
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"Content-Type": "application/dicom+json", **(headers or {})})


def send(files, respond, **kwargs):
    seen = []

    def handler(request):
        request.read()
        seen.append(request)
        return respond(request)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        result = store_instances(BASE, files, client=client, **kwargs)
    return result, seen


def test_the_request_is_a_multipart_related_body_of_the_files_with_a_true_content_length(files):
    result, (request,) = send(files, lambda r: answer(200, referenced=[item(u) for u in uids(files)]),
                              auth=HttpAuth.bearer("s3cret"), request_id="delivery-7")

    assert request.method == "POST" and str(request.url) == f"{BASE}/studies"
    assert request.headers["Accept"] == "application/dicom+json"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["X-Request-Id"] == "delivery-7"
    assert int(request.headers["Content-Length"]) == len(request.content)
    content_type = request.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.content)
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/dicom"] * 3
    assert [p.get_payload(decode=True) for p in parts] == [f.read_bytes() for f in files]
    assert result.complete


def test_a_study_scoped_request_goes_to_the_study_resource(files):
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    _, (request,) = send(files, lambda r: answer(200, referenced=[item(u) for u in uids(files)]),
                         study_instance_uid=study)
    assert str(request.url) == f"{BASE}/studies/{study}"


def test_the_body_is_streamed_in_chunks_not_built_in_memory(files):
    chunks = []

    class ChunkRecorder(httpx.BaseTransport):
        def handle_request(self, request):
            chunks.extend(request.stream)  # what a socket would be handed, chunk by chunk
            return answer(200, referenced=[item(u) for u in uids(files)])

    with httpx.Client(transport=ChunkRecorder()) as client:
        store_instances(BASE, files, client=client, chunk_size=1024)
    assert max(len(c) for c in chunks) <= 1024
    assert sum(len(c) for c in chunks) > 3 * 1024


@pytest.mark.parametrize(("code", "outcome"), [
    (0xA700, InstanceOutcome.FAILED_RETRYABLE),
    (0xA7FF, InstanceOutcome.FAILED_RETRYABLE),
    (0x0110, InstanceOutcome.FAILED_RETRYABLE),
    (0x0213, InstanceOutcome.FAILED_RETRYABLE),
    (0x0111, InstanceOutcome.STORED),
    (0x0122, InstanceOutcome.FAILED_FINAL),
    (0x0124, InstanceOutcome.FAILED_FINAL),
    (0xA900, InstanceOutcome.FAILED_FINAL),
    (0xC000, InstanceOutcome.FAILED_FINAL),
    (0xC122, InstanceOutcome.FAILED_FINAL),
    (0x1234, InstanceOutcome.FAILED_FINAL),
])
def test_failure_reasons_are_classified_per_the_table(code, outcome):
    assert classify_failure_reason(code) is outcome


def test_a_409_with_one_failed_instance_retries_only_that_one(files):
    a, b, c = uids(files)

    result, _ = send(files, lambda r: answer(
        409, referenced=[item(a), item(c, **{"00081196": ("US", 0xB000)})],
        failed=[item(b, **{"00081197": ("US", 0xA700)})]))

    assert [i.outcome for i in result.instances] == [
        InstanceOutcome.STORED, InstanceOutcome.FAILED_RETRYABLE, InstanceOutcome.STORED]
    assert result.to_retry == (b,)
    assert result.instances[1].failure_reason == 0xA700
    assert result.instances[1].reason == "0xA700 Refused: Out of Resources"
    assert result.instances[2].warning_reason == 0xB000
    assert "Coercion" in result.instances[2].reason
    assert result.peer_answer.startswith("HTTP 409 Conflict (application/dicom+json): 2 stored, 1 not stored")
    assert a not in result.peer_answer and b not in result.peer_answer


def test_a_final_failure_reason_is_not_retried(files):
    a, b, c = uids(files)
    result, _ = send(files, lambda r: answer(
        409, referenced=[item(a), item(c)], failed=[item(b, **{"00081197": ("US", 0xA900)})]))
    assert result.to_retry == ()
    assert [i.sop_instance_uid for i in result.final] == [b]


def test_an_instance_the_peer_did_not_report_is_retryable(files):
    a, b, c = uids(files)
    result, _ = send(files, lambda r: answer(200, referenced=[item(a), item(c)]))
    assert result.to_retry == (b,)
    assert "not reported" in result.instances[1].reason


@pytest.mark.parametrize(("status", "outcome"), [
    (500, InstanceOutcome.FAILED_RETRYABLE),
    (502, InstanceOutcome.FAILED_RETRYABLE),
    (503, InstanceOutcome.FAILED_RETRYABLE),
    (429, InstanceOutcome.FAILED_RETRYABLE),
    (408, InstanceOutcome.FAILED_RETRYABLE),
    (501, InstanceOutcome.FAILED_FINAL),
    (400, InstanceOutcome.FAILED_FINAL),
    (401, InstanceOutcome.FAILED_FINAL),
    (403, InstanceOutcome.FAILED_FINAL),
    (404, InstanceOutcome.FAILED_FINAL),
    (413, InstanceOutcome.FAILED_FINAL),
    (415, InstanceOutcome.FAILED_FINAL),
    (302, InstanceOutcome.FAILED_FINAL),
])
def test_http_statuses_without_a_response_data_set(files, status, outcome):
    result, _ = send(files, lambda r: httpx.Response(
        status, text="Study 1.2.840.99999.1.2.3 of DOE^JANE: nope", headers={"Retry-After": "120"}))
    assert [i.outcome for i in result.instances] == [outcome] * 3
    assert result.status_code == status
    assert result.peer_answer.startswith(f"HTTP {status}")
    assert "1.2.840.99999.1.2.3" not in result.peer_answer  # UIDs hashed in the excerpt
    if outcome is InstanceOutcome.FAILED_RETRYABLE:
        assert result.retry_after == 120.0


def test_a_2xx_that_is_not_a_stow_response_is_final(files):
    result, _ = send(files, lambda r: httpx.Response(
        200, text="<html>login</html>", headers={"Content-Type": "text/html"}))
    assert result.final == result.instances
    assert "DICOMweb service" in result.instances[0].reason
    assert "login" not in result.peer_answer


def test_connection_errors_and_timeouts_are_retryable(files):
    for error in (httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                  httpx.RemoteProtocolError("reset")):
        def fail(request, error=error):
            raise error
        result, _ = send(files, fail)
        assert result.status_code is None
        assert len(result.to_retry) == 3, type(error).__name__


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"instances": []}, "non-empty"),
    ({"base_url": "ftp://x/dicom-web"}, "http"),
    ({"base_url": "https://u:p@x/dicom-web"}, "credentials"),
    ({"timeout": 0}, "timeout"),
    ({"study_instance_uid": "1.02.3"}, "valid UID"),
    ({"request_id": "a\nb"}, "control"),
])
def test_bad_arguments_are_refused_with_a_clear_message(files, kwargs, message):
    arguments = {"base_url": BASE, "instances": files, **kwargs}
    with pytest.raises(ValueError, match=message):
        store_instances(arguments.pop("base_url"), arguments.pop("instances"), **arguments)


def test_files_that_are_not_ps310_or_repeat_a_uid_are_refused(files, tmp_path):
    raw = tmp_path / "raw.dcm"
    raw.write_bytes(files[0].read_bytes()[132:])
    with pytest.raises(ValueError, match="PS3.10"):
        store_instances(BASE, [raw])
    with pytest.raises(ValueError, match="repeats SOP Instance UID"):
        store_instances(BASE, [files[0], files[0]])


def test_credentials_never_show_in_repr_and_tls_options_are_checked(tmp_path):
    assert "s3cret" not in repr(HttpAuth.bearer("s3cret"))
    assert "pw" not in str(HttpAuth.basic("user", "pw"))
    assert HttpAuth.basic("user", "pw").headers() == {"Authorization": "Basic dXNlcjpwdw=="}
    with pytest.raises(ValueError, match="RFC 7617"):
        HttpAuth.basic("us:er", "pw")
    with pytest.raises(ValueError, match="not a readable file"):
        TlsOptions(ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="client_key needs client_cert"):
        key = tmp_path / "k.pem"
        key.write_text("x")
        TlsOptions(client_key=key)
    context = TlsOptions(verify=False).ssl_context()
    assert context.check_hostname is False
    with pytest.raises(ValueError, match="make_client"):
        store_instances(BASE, ["x"], tls=TlsOptions(), client=make_client())


def test_a_large_instance_is_sent_without_being_held_in_memory(tmp_path):
    import tracemalloc

    (big,) = write_series(tmp_path / "big", 1, rows=2048, columns=2048)  # 8 MB of pixels
    uid = uids([big])[0]
    sent = 0

    class Discard(httpx.BaseTransport):
        def handle_request(self, request):
            nonlocal sent
            for chunk in request.stream:  # a socket would write each chunk and drop it
                sent += len(chunk)
            return answer(200, referenced=[item(uid)])

    with httpx.Client(transport=Discard()) as client:
        tracemalloc.start()
        try:
            result = store_instances(BASE, [big], client=client)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.complete
    assert sent > big.stat().st_size > 8 * 1024 * 1024
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while sending an {big.stat().st_size}-byte file"


def test_refused_requests_are_worklist_errors(files):
    from worklist.destinations import InvalidStowRequestError
    from worklist.errors import WorklistError

    with pytest.raises(InvalidStowRequestError) as caught:
        store_instances(BASE, files, request_id="a\nb")
    assert isinstance(caught.value, WorklistError) and isinstance(caught.value, ValueError)

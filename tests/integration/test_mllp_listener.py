"""HL7 v2 over MLLP against a real listener: hl7apy's own ``MLLPServer`` on a free loopback port.

The listener parses what arrives with hl7apy and answers with an ACK that
hl7apy builds, so both the framing and the fields are checked by an
independent implementation; tests assert the received message field by field.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

from tests.integration.tls import NoOpenSSL, self_signed_certificate, server_context
from worklist.destinations import TlsOptions
from worklist.destinations.mllp import MllpOutcome, frame, message_control_id, send_message

ORU = "ORU^R01^ORU_R01"


def oru_message(control_id: str = "RG-0001") -> str:
    """An ORU^R01 (v2.5.1) as hl7apy builds it: PID, OBR and one OBX with non-ASCII text."""
    message = Message("ORU_R01", version="2.5.1")
    message.msh.msh_3 = "RADGROUND"
    message.msh.msh_5 = "EHR"
    message.msh.msh_9 = ORU
    message.msh.msh_10 = control_id
    message.msh.msh_11 = "P"
    message.msh.msh_18 = "UNICODE UTF-8"
    patient = message.oru_r01_patient_result.oru_r01_patient
    patient.pid.pid_3 = "RG-TEST-0001^^^HOSP^MR"
    patient.pid.pid_5 = "Test^Synthetic"
    order = message.oru_r01_patient_result.oru_r01_order_observation
    order.obr.obr_3 = "ACC0001"
    order.obr.obr_4 = "36643-5^XR Chest 2 Views^LN"
    obx = order.add_group("ORU_R01_OBSERVATION").obx
    obx.obx_1 = "1"
    obx.obx_2 = "TX"
    obx.obx_3 = "59776-5^Procedure findings^LN"
    obx.obx_5 = "右下肺 consolidation (肺炎)"
    obx.obx_11 = "P"
    return message.to_er7()


def ack(code: str, control_id: str, *, text: str = "", error: str | None = None) -> str:
    """A framed ACK built by hl7apy (MSA-1 ``code``, MSA-2 ``control_id``, optional ERR-3)."""
    message = Message("ACK", version="2.5.1")
    message.msh.msh_3 = "EHR"
    message.msh.msh_9 = "ACK^R01^ACK"
    message.msh.msh_10 = "EHR-ACK-1"
    message.msh.msh_11 = "P"
    message.msa.msa_1 = code
    message.msa.msa_2 = control_id
    if text:
        message.msa.msa_3 = text
    if error is not None:
        segment = message.add_segment("ERR")
        segment.err_3 = error
        segment.err_4 = "E"
    return message.to_mllp()


class Receiver:
    """What the listener saw, and how it answers."""

    def __init__(self, answer: Callable[[str], str | None]) -> None:
        self.answer = answer
        self.received: list[str] = []
        self.release = threading.Event()


class TlsMLLPServer(MLLPServer):
    """hl7apy's MLLPServer speaking TLS: each accepted connection is wrapped (socketserver's
    documented ``get_request`` hook)."""

    def __init__(self, *args, context: ssl.SSLContext, **kwargs) -> None:
        self.context = context
        super().__init__(*args, **kwargs)

    def get_request(self):
        connection, address = super().get_request()
        return self.context.wrap_socket(connection, server_side=True), address


@contextmanager
def mllp_listener(answer: Callable[[str], str | None], *,
                  tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, Receiver]]:
    """hl7apy's MLLPServer on a free loopback port; ``answer(message)`` returns the framed
    reply, or None to keep the connection silent until the test ends."""
    receiver = Receiver(answer)

    class Handler(AbstractHandler):
        def reply(self) -> str:
            receiver.received.append(self.incoming_message)
            reply = receiver.answer(self.incoming_message)
            if reply is None:
                receiver.release.wait(30)
                return ""
            return reply

    if tls is None:
        server = MLLPServer("127.0.0.1", 0, {ORU: (Handler,)}, timeout=30)
    else:
        server = TlsMLLPServer("127.0.0.1", 0, {ORU: (Handler,)}, timeout=30, context=tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_an_accepted_message_arrives_field_by_field_as_sent():
    sent = oru_message("RG-0001")
    with mllp_listener(lambda m: ack("AA", parse_message(m).msh.msh_10.value)) as (port, receiver):
        result = send_message("127.0.0.1", port, sent, timeout=10)

    assert result.outcome is MllpOutcome.ACCEPTED and result.accepted
    assert result.ack_code == "AA" and result.control_id == "RG-0001"
    (received,) = receiver.received
    got, want = parse_message(received, find_groups=False), parse_message(sent, find_groups=False)
    for path in ("msh.msh_3", "msh.msh_5", "msh.msh_9", "msh.msh_10", "msh.msh_11", "msh.msh_12",
                 "msh.msh_18", "pid.pid_3", "pid.pid_5", "obr.obr_3", "obr.obr_4", "obx.obx_1",
                 "obx.obx_2", "obx.obx_3", "obx.obx_5", "obx.obx_11"):
        segment, field = path.split(".")
        assert getattr(getattr(got, segment), field).value == getattr(getattr(want, segment), field).value, path
    assert got.obx.obx_5.value == "右下肺 consolidation (肺炎)"
    assert got.msh.msh_18.value == "UNICODE UTF-8"
    # nothing added, dropped or re-encoded; every segment ends with <CR> (HL7 v2.5.1 §2.5.1)
    assert received == sent + "\r"


def test_an_application_error_keeps_msa3_and_err_and_is_retried_for_an_internal_error():
    reply = ack("AE", "RG-0002", text="database busy", error="207^Application internal error^HL70357")
    with mllp_listener(lambda m: reply) as (port, _):
        result = send_message("127.0.0.1", port, oru_message("RG-0002"), timeout=10)

    assert result.outcome is MllpOutcome.FAILED_RETRYABLE
    assert result.ack_code == "AE" and result.text_message == "database busy"
    assert result.error_segments == ("ERR|||207^Application internal error^HL70357|E",)
    assert result.error_conditions == (207,)
    assert result.reason == "MSA-1 AE, ERR-3 207"
    assert "MSA|AE|RG-0002|database busy" in (result.ack or "")


def test_an_application_error_for_a_missing_required_field_is_final():
    reply = ack("AE", "RG-0003", text="PID-3 missing", error="101^Required field missing^HL70357")
    with mllp_listener(lambda m: reply) as (port, _):
        result = send_message("127.0.0.1", port, oru_message("RG-0003"), timeout=10)
    assert result.outcome is MllpOutcome.FAILED_FINAL
    assert result.error_conditions == (101,)
    assert result.text_message == "PID-3 missing"


def test_an_application_error_without_err_is_retryable():
    with mllp_listener(lambda m: ack("AE", "RG-0004")) as (port, _):
        result = send_message("127.0.0.1", port, oru_message("RG-0004"), timeout=10)
    assert result.outcome is MllpOutcome.FAILED_RETRYABLE
    assert result.error_segments == ()


def test_an_application_reject_is_final_with_its_err_kept():
    reply = ack("AR", "RG-0005", text="version not supported", error="203^Unsupported version id^HL70357")
    with mllp_listener(lambda m: reply) as (port, _):
        result = send_message("127.0.0.1", port, oru_message("RG-0005"), timeout=10)
    assert result.outcome is MllpOutcome.FAILED_FINAL
    assert result.ack_code == "AR" and result.error_conditions == (203,)
    assert result.text_message == "version not supported"


def test_a_reject_without_err_is_final():
    with mllp_listener(lambda m: ack("AR", "RG-0006")) as (port, _):
        result = send_message("127.0.0.1", port, oru_message("RG-0006"), timeout=10)
    assert result.outcome is MllpOutcome.FAILED_FINAL


def test_a_listener_that_never_answers_is_retryable_after_the_deadline():
    with mllp_listener(lambda m: None) as (port, receiver):
        result = send_message("127.0.0.1", port, oru_message("RG-0007"), timeout=0.5)
        assert len(receiver.received) == 1  # it did arrive; only the ACK is missing
    assert result.outcome is MllpOutcome.FAILED_RETRYABLE
    assert result.ack_code is None and "no ACK" in result.reason


def test_a_listener_that_is_down_is_retryable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = send_message("127.0.0.1", port, oru_message("RG-0008"), timeout=2, connect_timeout=2)
    assert result.outcome is MllpOutcome.FAILED_RETRYABLE
    assert "ConnectionRefusedError" in result.reason


def test_an_ack_for_another_control_id_is_not_taken_as_acceptance():
    with mllp_listener(lambda m: ack("AA", "SOMEONE-ELSE")) as (port, _):
        result = send_message("127.0.0.1", port, oru_message("RG-0009"), timeout=10)
    assert result.outcome is MllpOutcome.FAILED_RETRYABLE
    assert result.ack_code == "AA"
    assert "another message" in result.reason


def test_a_listener_that_closes_without_answering_is_retryable():
    with mllp_listener(lambda m: "") as (port, _):  # hl7apy writes nothing and closes
        result = send_message("127.0.0.1", port, oru_message("RG-0010"), timeout=10)
    assert result.outcome is MllpOutcome.FAILED_RETRYABLE
    assert "closed" in result.reason


def test_a_port_that_does_not_speak_mllp_is_final():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_http():
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_http, daemon=True)
        thread.start()
        result = send_message("127.0.0.1", port, oru_message("RG-0011"), timeout=10)
        thread.join(10)
    assert result.outcome is MllpOutcome.FAILED_FINAL
    assert "start block" in result.reason


def test_framing_and_control_id_errors_are_refused_before_sending():
    assert frame("MSH|^~\\&|A\r") == b"\x0bMSH|^~\\&|A\r\x1c\r"
    assert message_control_id(oru_message("RG-42")) == "RG-42"
    with pytest.raises(ValueError, match="framing bytes"):
        frame("MSH|^~\\&|\x1c")
    with pytest.raises(ValueError, match="MSH-10"):
        send_message("127.0.0.1", 9, "MSH|^~\\&|A|B|C|D|20260101||ORU^R01|\rPID|1")
    with pytest.raises(ValueError, match="MSH segment"):
        send_message("127.0.0.1", 9, "PID|1")
    with pytest.raises(ValueError, match="port"):
        send_message("127.0.0.1", 0, oru_message())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    try:
        return self_signed_certificate(tmp_path_factory.mktemp("tls"))
    except NoOpenSSL as exc:
        pytest.skip(str(exc))


def test_tls_with_the_receivers_ca_is_accepted(certificate):
    with mllp_listener(lambda m: ack("AA", "RG-0012"), tls=server_context(certificate)) as (port, receiver):
        result = send_message("127.0.0.1", port, oru_message("RG-0012"), timeout=10,
                              tls=TlsOptions(ca_bundle=certificate[0]))
    assert result.outcome is MllpOutcome.ACCEPTED
    assert parse_message(receiver.received[0]).msh.msh_10.value == "RG-0012"


def test_tls_with_an_untrusted_certificate_is_final(certificate):
    with mllp_listener(lambda m: ack("AA", "RG-0013"), tls=server_context(certificate)) as (port, receiver):
        result = send_message("127.0.0.1", port, oru_message("RG-0013"), timeout=10, tls=TlsOptions())
        assert receiver.received == []  # nothing sent over an unverified channel
    assert result.outcome is MllpOutcome.FAILED_FINAL
    assert "TLS certificate" in result.reason


@pytest.mark.parametrize(("code", "error", "outcome"), [
    ("CA", None, MllpOutcome.ACCEPTED),
    ("CE", None, MllpOutcome.FAILED_RETRYABLE),
    ("CR", None, MllpOutcome.FAILED_FINAL),
    ("AE", "204^Unknown key identifier^HL70357", MllpOutcome.FAILED_RETRYABLE),
    ("AE", "206^Application record locked^HL70357", MllpOutcome.FAILED_RETRYABLE),
    ("AR", "207^Application internal error^HL70357", MllpOutcome.FAILED_RETRYABLE),
    ("AE", "103^Table value not found^HL70357", MllpOutcome.FAILED_FINAL),
    ("AE", "205^Duplicate key identifier^HL70357", MllpOutcome.FAILED_FINAL),
    ("ZZ", None, MllpOutcome.FAILED_FINAL),
])
def test_acknowledgment_codes_and_error_conditions_are_classified_per_the_table(code, error, outcome):
    with mllp_listener(lambda m: ack(code, "RG-0100", error=error)) as (port, _):
        result = send_message("127.0.0.1", port, oru_message("RG-0100"), timeout=10)
    assert result.outcome is outcome
    assert result.ack_code == code

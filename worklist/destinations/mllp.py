"""Send one HL7 v2 message over MLLP and read its acknowledgment.

The Minimal Lower Layer Protocol (HL7 v2.5.1 Implementation Guide, Appendix C;
HL7 Version 3 Standard: Transport Specification - MLLP, Release 2) frames a
message as ``<VT> message <FS><CR>`` (0x0B ... 0x1C 0x0D) on a TCP connection.
:func:`send_message` opens a connection (optionally TLS), sends one framed
message, reads one framed answer before a deadline, checks that the answer
acknowledges this message (MSA-2 equals the MSH-10 sent) and closes.

Sending a message again is safe when it keeps its MSH-10 Message Control ID:
receivers deduplicate on it (HL7 v2.5.1 §2.10.1, sequence/duplicate detection).

Classification (HL7 v2.5.1 §2.9.2 original and §2.9.3 enhanced acknowledgment
mode; MSA-1 values from HL7 table 0008, ERR-3 from table 0357)
--------------------------------------------------------------------------------

======================================================  ==================
Answer                                                  Outcome
======================================================  ==================
MSA-1 ``AA`` (application accept) or ``CA`` (commit     accepted
accept)
``AE``/``AR``/``CE``/``CR`` with ERR-3 = 206 (record    failed-retryable
locked), 207 (application internal error) or 204
(unknown key identifier: a result that arrives before
the receiver knows the patient or order)
``AE``/``AR``/``CE``/``CR`` with ERR-3 = 100-103        failed-final
(segment sequence, required field, data type, table
value), 200-203 (unsupported message type, event,
processing ID, version), 205 (duplicate key) or any
other code
``AE`` (application error) or ``CE`` without a          failed-retryable
readable ERR-3: §2.9.2.2 says the receiver failed
to process the message; that may be transient, and
the delivery's retry period bounds it
``AR`` (application reject) or ``CR`` without a         failed-final
readable ERR-3: §2.9.2.1 rejects a message whose
MSH-9/11/12 the receiver does not support, a
configuration problem retrying cannot fix
an ACK whose MSA-2 is not the MSH-10 sent               failed-retryable (it acknowledges
                                                        another message; ours may be lost)
no ACK before the deadline, connection refused, reset   failed-retryable
or closed before a whole frame, other socket errors
TLS certificate refused                                 failed-final
an answer that is not an MLLP frame, or a frame         failed-final (the peer does not speak
without an MSA segment                                  MLLP/HL7 v2 on that port)
======================================================  ==================

For the operator, :class:`MllpResult` keeps MSA-1, MSA-3 (text message) and the
ERR segments as received, and the whole ACK (ER7, at most 4 KB). Logs carry the
peer, the acknowledgment code and durations only: never the message, MSA-3 or
ERR (they may quote patient data).
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum

from worklist.destinations.errors import InvalidMllpRequestError
from worklist.destinations.security import TlsOptions

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "AckCode",
    "ErrorCondition",
    "MllpOutcome",
    "MllpResult",
    "frame",
    "message_control_id",
    "send_message",
]

_log = logging.getLogger(__name__)

#: MLLP start block <VT> and end block <FS><CR> (HL7 v2.5.1 Appendix C.2.1).
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
#: Largest acknowledgment read (bytes); a longer answer is not an ACK.
MAX_ACK_BYTES = 1024 * 1024
#: How much of the ACK is kept for the operator (characters).
ACK_KEEP_LIMIT = 4096


class AckCode(StrEnum):
    """MSA-1 Acknowledgment Code (HL7 table 0008)."""

    APPLICATION_ACCEPT = "AA"
    APPLICATION_ERROR = "AE"
    APPLICATION_REJECT = "AR"
    COMMIT_ACCEPT = "CA"
    COMMIT_ERROR = "CE"
    COMMIT_REJECT = "CR"


class ErrorCondition:
    """ERR-3 HL7 Error Code values (HL7 table 0357, v2.5.1)."""

    SEGMENT_SEQUENCE_ERROR = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE_ERROR = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION_ID = 203
    UNKNOWN_KEY_IDENTIFIER = 204
    DUPLICATE_KEY_IDENTIFIER = 205
    APPLICATION_RECORD_LOCKED = 206
    APPLICATION_INTERNAL_ERROR = 207


_RETRYABLE_CONDITIONS = frozenset({
    ErrorCondition.UNKNOWN_KEY_IDENTIFIER,
    ErrorCondition.APPLICATION_RECORD_LOCKED,
    ErrorCondition.APPLICATION_INTERNAL_ERROR,
})


class MllpOutcome(StrEnum):
    """What became of the message."""

    ACCEPTED = "accepted"
    #: Not accepted; sending the same message (same MSH-10) later may succeed.
    FAILED_RETRYABLE = "failed-retryable"
    #: Not accepted; sending it again gives the same answer: the operator must act.
    FAILED_FINAL = "failed-final"


@dataclass(frozen=True)
class MllpResult:
    """The outcome of one message.

    Attributes
    ----------
    outcome
        Accepted, failed-retryable or failed-final (module docstring's table).
    control_id
        MSH-10 Message Control ID of the message sent.
    reason
        One line for the operator: the acknowledgment code and ERR-3 codes,
        or what went wrong on the way.
    ack_code
        MSA-1 as received, or None without an ACK.
    text_message
        MSA-3 Text Message as received ("" when empty).
    error_segments
        The ACK's ERR segments as received (ER7, one string each).
    error_conditions
        The ERR-3 identifiers that are numbers (HL7 table 0357), in order.
    ack
        The whole ACK (segments separated by ``\\r``), at most 4096 characters;
        None without an ACK.
    elapsed_s
        Seconds from connecting to reading the ACK (or failing).
    """

    outcome: MllpOutcome
    control_id: str
    reason: str
    ack_code: str | None = None
    text_message: str = ""
    error_segments: tuple[str, ...] = ()
    error_conditions: tuple[int, ...] = ()
    ack: str | None = None
    elapsed_s: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.outcome is MllpOutcome.ACCEPTED


# -- framing and the little ER7 we need ----------------------------------------


def frame(message: str, *, encoding: str = "utf-8") -> bytes:
    """``message`` encoded and wrapped in MLLP start and end blocks (Appendix C.2.1).

    Raises
    ------
    InvalidMllpRequestError
        The message holds a framing byte (0x0B, 0x1C) or cannot be encoded.
    """
    try:
        payload = message.encode(encoding)
    except UnicodeEncodeError as exc:
        raise InvalidMllpRequestError(f"message cannot be encoded as {encoding}: {exc.reason}") from None
    if START_BLOCK in payload or b"\x1c" in payload:
        raise InvalidMllpRequestError("message must not contain the MLLP framing bytes 0x0B or 0x1C")
    return START_BLOCK + payload + END_BLOCK


def _segments(message: str) -> list[str]:
    return [s for s in message.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]


def _separators(msh: str) -> tuple[str, str]:
    """(field separator, component separator) from MSH-1 and MSH-2 (§2.5.4)."""
    if len(msh) < 5 or not msh.startswith("MSH"):
        raise InvalidMllpRequestError("the message does not start with an MSH segment")
    return msh[3], msh[4]


def _fields(segment: str, field_separator: str) -> list[str]:
    """Fields of a segment, numbered as in the standard: ``fields[1]`` is SEG-1.

    For MSH, MSH-1 is the field separator itself, so MSH-n is ``fields[n]`` too.
    """
    parts = segment.split(field_separator)
    if parts[0] == "MSH":
        return ["MSH", field_separator, *parts[1:]]
    return parts


def _field(fields: list[str], number: int) -> str:
    return fields[number] if number < len(fields) else ""


def message_control_id(message: str) -> str:
    """MSH-10 Message Control ID of an ER7 message."""
    segments = _segments(message)
    if not segments:
        raise InvalidMllpRequestError("the message is empty")
    field_separator, _ = _separators(segments[0])
    control_id = _field(_fields(segments[0], field_separator), 10)
    if not control_id:
        raise InvalidMllpRequestError("the message has no MSH-10 Message Control ID")
    return control_id


# -- sending -------------------------------------------------------------------


def send_message(
    host: str,
    port: int,
    message: str,
    *,
    timeout: float = 30.0,
    connect_timeout: float = 10.0,
    tls: TlsOptions | None = None,
    server_hostname: str | None = None,
    encoding: str = "utf-8",
) -> MllpResult:
    """Send one HL7 v2 message over MLLP and classify its acknowledgment.

    Parameters
    ----------
    host, port
        The receiver's MLLP listener.
    message
        The message in ER7 (pipe-delimited) encoding, segments separated by
        ``\\r`` (``\\n`` and ``\\r\\n`` are turned into ``\\r``); it must start
        with an MSH segment carrying MSH-10.
    timeout
        Seconds allowed from the end of connecting to the whole ACK (> 0).
    connect_timeout
        Seconds allowed for the TCP (and TLS) connection (> 0).
    tls
        Speak TLS (:class:`TlsOptions`); None for plain TCP.
    server_hostname
        The name checked against the receiver's certificate (default ``host``).
    encoding
        Character encoding on the wire; it must match MSH-18 (UTF-8 by default,
        MSH-18 ``UNICODE UTF-8``).

    Returns
    -------
    MllpResult
        The outcome (module docstring's table), MSA and ERR for the operator.

    Raises
    ------
    InvalidMllpRequestError
        (a ``ValueError``) Nothing was sent: a message without MSH or MSH-10,
        with framing bytes, not encodable; a bad host, port or timeout.
    TypeError
        ``message`` is not a str or ``tls`` not :class:`TlsOptions`.
    """
    if not isinstance(message, str):
        raise TypeError(f"message must be a str (ER7), got {type(message).__name__}")
    if not isinstance(host, str) or not host:
        raise InvalidMllpRequestError("host must be a non-empty string")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidMllpRequestError(f"port must be 1-65535, got {port!r}")
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0
        ):
            raise InvalidMllpRequestError(f"{name} must be a positive number of seconds, got {value!r}")
    if tls is not None and not isinstance(tls, TlsOptions):
        raise TypeError(f"tls must be TlsOptions, got {type(tls).__name__}")
    wire_message = "\r".join(_segments(message)) + "\r"
    control_id = message_control_id(wire_message)
    payload = frame(wire_message, encoding=encoding)
    peer = f"{'mllps' if tls else 'mllp'}://{host}:{port}"

    started = time.monotonic()
    try:
        raw = _exchange(host, port, payload, timeout=timeout, connect_timeout=connect_timeout,
                        tls=tls, server_hostname=server_hostname)
    except ssl.SSLCertVerificationError as exc:
        elapsed = time.monotonic() - started
        _log.warning("MLLP to %s: TLS certificate refused after %.3f s", peer, elapsed)
        return MllpResult(MllpOutcome.FAILED_FINAL, control_id,
                          f"TLS certificate of {peer} refused: {exc.verify_message}", elapsed_s=elapsed)
    except _NotMllp as exc:
        elapsed = time.monotonic() - started
        _log.warning("MLLP to %s: the answer is not an MLLP frame after %.3f s", peer, elapsed)
        return MllpResult(MllpOutcome.FAILED_FINAL, control_id, f"{peer}: {exc}", elapsed_s=elapsed)
    except TimeoutError:
        elapsed = time.monotonic() - started
        _log.warning("MLLP to %s: no ACK within %.1f s (retryable)", peer, elapsed)
        return MllpResult(MllpOutcome.FAILED_RETRYABLE, control_id,
                          f"no ACK from {peer} within {elapsed:.1f} s", elapsed_s=elapsed)
    except (OSError, _ClosedEarly) as exc:
        elapsed = time.monotonic() - started
        kind = type(exc).__name__
        _log.warning("MLLP to %s: %s after %.3f s (retryable)", peer, kind, elapsed)
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return MllpResult(MllpOutcome.FAILED_RETRYABLE, control_id,
                          f"{peer}: {kind}: {detail}" if detail else f"{peer}: {kind}", elapsed_s=elapsed)
    elapsed = time.monotonic() - started
    result = _classify(raw.decode(encoding, errors="replace"), control_id, elapsed)
    _log.info("MLLP to %s: MSA-1 %s in %.3f s (%s)", peer, result.ack_code, elapsed, result.outcome)
    return result


class _ClosedEarly(Exception):
    """The receiver closed the connection before a whole frame came."""


class _NotMllp(Exception):
    """The answer is not an MLLP frame."""


def _exchange(host: str, port: int, payload: bytes, *, timeout: float, connect_timeout: float,
              tls: TlsOptions | None, server_hostname: str | None) -> bytes:
    """Connect, send the frame, return the payload of the first frame answered."""
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.ssl_context().wrap_socket(sock, server_hostname=server_hostname or host)
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        sock.sendall(payload)
        received = bytearray()
        while True:
            end = received.find(END_BLOCK)
            if end >= 0:
                break
            if len(received) > MAX_ACK_BYTES:
                raise _NotMllp(f"more than {MAX_ACK_BYTES} bytes without an MLLP end block")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                raise _ClosedEarly("connection closed before a whole ACK came"
                                   + (f" ({len(received)} bytes)" if received else ""))
            if not received and not chunk.startswith(START_BLOCK):
                raise _NotMllp(f"the answer does not start with the MLLP start block (0x0B) but "
                               f"{chunk[:1].hex()}; does this port speak MLLP?")
            received += chunk
        return bytes(received[1:end])
    finally:
        sock.close()


def _classify(ack: str, control_id: str, elapsed: float) -> MllpResult:
    segments = _segments(ack)
    kept = "\r".join(segments)[:ACK_KEEP_LIMIT]
    try:
        field_separator, component_separator = _separators(segments[0] if segments else "")
    except ValueError:
        return MllpResult(MllpOutcome.FAILED_FINAL, control_id,
                          "the answer is not an HL7 v2 message (no MSH)", ack=kept, elapsed_s=elapsed)
    msa = next((_fields(s, field_separator) for s in segments if s.startswith("MSA" + field_separator)),
               None)
    if msa is None:
        return MllpResult(MllpOutcome.FAILED_FINAL, control_id, "the answer has no MSA segment",
                          ack=kept, elapsed_s=elapsed)
    code, acked_id, text = _field(msa, 1), _field(msa, 2), _field(msa, 3)
    errors = tuple(s for s in segments if s.startswith("ERR" + field_separator))
    conditions = tuple(
        int(identifier) for identifier in (
            _field(_fields(e, field_separator), 3).split(component_separator)[0] for e in errors)
        if identifier.isdigit()
    )
    def result(outcome: MllpOutcome, reason: str) -> MllpResult:
        return MllpResult(outcome, control_id, reason, ack_code=code, text_message=text,
                          error_segments=errors, error_conditions=conditions, ack=kept,
                          elapsed_s=elapsed)

    if acked_id != control_id:
        return result(MllpOutcome.FAILED_RETRYABLE,
                      f"the ACK (MSA-1 {code}) acknowledges another message: MSA-2 is not the "
                      "MSH-10 sent")
    if code in (AckCode.APPLICATION_ACCEPT, AckCode.COMMIT_ACCEPT):
        return result(MllpOutcome.ACCEPTED, f"MSA-1 {code}")
    reason = f"MSA-1 {code}" + (f", ERR-3 {', '.join(map(str, conditions))}" if conditions else "")
    if conditions:
        retryable = all(c in _RETRYABLE_CONDITIONS for c in conditions)
    elif code in (AckCode.APPLICATION_ERROR, AckCode.COMMIT_ERROR):
        retryable = True
    elif code in (AckCode.APPLICATION_REJECT, AckCode.COMMIT_REJECT):
        retryable = False
    else:
        reason = f"MSA-1 {code!r} is not an acknowledgment code of HL7 table 0008"
        retryable = False
    return result(MllpOutcome.FAILED_RETRYABLE if retryable else MllpOutcome.FAILED_FINAL, reason)

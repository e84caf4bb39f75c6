"""Destination type ``hl7``: HL7 v2 ORU^R01 messages over MLLP (HL7 v2.5.1 Appendix C).

The MLLP client is :func:`worklist.destinations.mllp.send_message`; this module adapts
its acknowledgment handling to the destination protocol: AA delivers; AE/AR fail
(final, or retryable for the ERR-3 conditions a receiver may clear by itself) with the
ACK kept for the operator; no ACK in time is retryable. A message is resent
unchanged, with the same MSH-10 Message Control ID, so a receiver can
deduplicate it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from exporters.hl7.enum import ProcessingId
from worklist.destinations.errors import InvalidMllpRequestError
from worklist.destinations.mllp import MllpOutcome, send_message
from worklist.destinations.protocol import (
    ArtifactFile,
    DeliveryOutcome,
    DestinationTarget,
    select_artifacts,
)
from worklist.destinations.security import TlsOptions, warn_insecure_use

__all__ = ["Hl7Target", "MllpDestination", "is_message_for", "message_filename"]


@dataclass(frozen=True)
class Hl7Target:
    """A ``[destinations.NAME]`` section of ``type = "hl7"``."""

    host: str
    port: int
    tls: TlsOptions | None = None
    #: MSH-4, MSH-5 and MSH-6 of the messages built for this receiver (None: left empty).
    sending_facility: str | None = None
    receiving_application: str | None = None
    receiving_facility: str | None = None
    #: MSH-11 Processing ID: "P" production, "T" training, "D" debugging (HL7 table 0103).
    processing_id: ProcessingId = ProcessingId.PRODUCTION
    ack_timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    outputs: tuple[str, ...] = ("hl7",)
    languages: tuple[str, ...] = ()
    name: str = ""
    retry_for_seconds: float | None = None
    type: ClassVar[str] = "hl7"


def message_filename(name: str) -> str:
    """The file the export writes a destination's ORU^R01 to (its MSH-5/MSH-6)."""
    return f"hl7-{name}.hl7"


def is_message_for(filename: str, name: str) -> bool:
    """Whether ``filename`` is receiver ``name``'s ORU^R01: ``hl7-NAME.hl7`` of the model's set,
    ``hl7-NAME-signoffN.hl7`` of a sign-off's (a delivery gets only its set's files)."""
    return filename == message_filename(name) or re.fullmatch(
        rf"hl7-{re.escape(name)}-signoff[1-9][0-9]*\.hl7", filename
    ) is not None


class MllpDestination:
    """Sends each HL7 message the target takes, in order, and reads its ACK."""

    type: ClassVar[str] = "hl7"

    def deliver(
        self, artifacts: Sequence[ArtifactFile], target: DestinationTarget
    ) -> DeliveryOutcome:
        if not isinstance(target, Hl7Target):
            raise TypeError(
                f"a {self.type} destination delivers to a Hl7Target, not {type(target).__name__}"
            )
        messages = select_artifacts(artifacts, target)
        own = [a for a in messages if is_message_for(a.path.name, target.name)]
        messages = own or messages
        if not messages:
            return DeliveryOutcome.final(f"no HL7 message was exported for {target.name!r}")
        if target.tls is not None and not target.tls.verify:
            warn_insecure_use(target.name, f"{target.host}:{target.port}")
        for index, artifact in enumerate(messages):
            try:
                result = send_message(
                    target.host,
                    target.port,
                    artifact.path.read_bytes().decode("utf-8"),
                    timeout=target.ack_timeout_seconds,
                    connect_timeout=target.connect_timeout_seconds,
                    tls=target.tls,
                )
            except InvalidMllpRequestError as exc:
                return DeliveryOutcome.final(f"HL7 {target.name}: {exc}")
            if result.outcome is MllpOutcome.ACCEPTED:
                continue
            answer = f"HL7 {target.name}: {result.reason}"
            if result.text_message:
                answer += f": {result.text_message}"
            log_text = f"HL7 {target.name}: MSA-1 {result.ack_code or '-'}"
            if result.outcome is MllpOutcome.FAILED_RETRYABLE:
                return DeliveryOutcome.retryable(
                    answer,
                    log_text=log_text,
                    peer_document=result.ack,
                    remaining=[a.object_uid for a in messages[index:]],
                )
            return DeliveryOutcome.final(answer, log_text=log_text, peer_document=result.ack)
        return DeliveryOutcome.delivered(f"{len(messages)} messages accepted")

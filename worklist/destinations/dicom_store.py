"""Destination type ``dicom``: DICOM C-STORE to a PACS through the node's Storage SCU.

The SCU (:class:`dicom_node.scu.StorageSCU`, PS3.4 Annex B) lives with the rest of the
DIMSE code in ``dicom_node``; this module adapts it to the destination protocol.
The objects keep their SOP Instance UIDs, so a repeated delivery stores nothing new
(PACS keep or replace the instance; none makes a second one). With ``tls`` the
associations are DICOM TLS (PS3.15 B.1/B.9, BCP 195 profile): the peer's
certificate checked against the CA bundle and ``server_name``, ours presented
for mutual TLS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from dicom_node.patches import PYNETDICOM_PATCHES
from dicom_node.scu import Destination as DicomPeer
from dicom_node.scu import SendResult, StorageSCU
from worklist.destinations.protocol import (
    ArtifactFile,
    DeliveryOutcome,
    DestinationTarget,
    select_artifacts,
)
from worklist.destinations.security import TlsOptions

__all__ = ["DicomStoreDestination", "DicomTarget"]

#: C-STORE statuses worth retrying: nothing sent (no status) or 0xA7xx Out of Resources
#: (PS3.4 B.2.3).
_RETRYABLE_STORE_STATUSES = range(0xA700, 0xA800)


@dataclass(frozen=True)
class DicomTarget:
    """A ``[destinations.NAME]`` section of ``type = "dicom"``."""

    destination: DicomPeer
    outputs: tuple[str, ...] = ("sr", "gsps")
    languages: tuple[str, ...] = ()
    name: str = ""
    #: The calling AE title of our SCU.
    calling_ae_title: str = "RADGROUND"
    #: node.pynetdicom_patches, for the SCU (dicom_node.patches).
    pynetdicom_patches: tuple[str, ...] = PYNETDICOM_PATCHES
    retry_for_seconds: float | None = None
    #: Associate over DICOM TLS with these options; None: plain TCP.
    tls: TlsOptions | None = None
    #: The name the peer's certificate must carry; None: the destination's host.
    server_name: str | None = None
    type: ClassVar[str] = "dicom"

    def __post_init__(self) -> None:
        if self.tls is not None and not isinstance(self.tls, TlsOptions):
            raise TypeError(f"tls must be TlsOptions, got {type(self.tls).__name__}")
        if self.server_name is not None and self.tls is None:
            raise ValueError("server_name is only checked over TLS: set tls too")


class DicomStoreDestination:
    """Sends the target's DICOM objects with C-STORE over one association per batch."""

    type: ClassVar[str] = "dicom"

    def deliver(
        self, artifacts: Sequence[ArtifactFile], target: DestinationTarget
    ) -> DeliveryOutcome:
        if not isinstance(target, DicomTarget):
            raise TypeError(
                f"a {self.type} destination delivers to a DicomTarget, not {type(target).__name__}"
            )
        files = [a.path for a in select_artifacts(artifacts, target)]
        if not files:
            return DeliveryOutcome.delivered("nothing to send")
        scu = StorageSCU(
            target.calling_ae_title,
            pynetdicom_patches=target.pynetdicom_patches,
            tls=target.tls.ssl_context() if target.tls is not None else None,
            server_name=target.server_name,
        )
        results = scu.send(files, target.destination)
        failed = [r for r in results if not r.ok]
        if not failed:
            return DeliveryOutcome.delivered(f"{len(results)} objects stored")
        first = failed[0]
        # With a status the peer answered; without one the reason says what happened
        # (could not connect, no response, not sent after the association was lost).
        why = (
            f"status 0x{first.status:04X} {first.reason}".strip()
            if first.status is not None
            else first.reason
        )
        answer = (
            f"{len(failed)} of {len(results)} objects not stored at {target.destination}: {why}"
        )
        log_text = f"{len(failed)} of {len(results)} objects not stored at {target.destination}" + (
            f" (status 0x{first.status:04X})" if first.status is not None else ""
        )
        if all(_retryable(r) for r in failed):
            return DeliveryOutcome.retryable(answer, log_text=log_text)
        return DeliveryOutcome.final(answer, log_text=log_text)


def _retryable(result: SendResult) -> bool:
    return result.status is None or result.status in _RETRYABLE_STORE_STATUSES

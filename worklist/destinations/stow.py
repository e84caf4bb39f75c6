"""Destination type ``dicomweb``: DICOM objects stored with STOW-RS (PS3.18 §10.5).

The HTTP client is :func:`worklist.destinations.dicomweb.store_instances`; this module
adapts its per-instance outcome to the destination protocol. A partial failure
(some instances stored, others refused with a reason worth retrying, e.g. HTTP 409
with a Failed SOP Sequence of 0xA7xx) is retryable with only those instances
remaining: the next attempt sends just them. The objects keep their SOP Instance
UIDs, so a repeated delivery stores nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from worklist.destinations.dicomweb import store_instances
from worklist.destinations.errors import InvalidStowRequestError
from worklist.destinations.protocol import (
    ArtifactFile,
    DeliveryOutcome,
    DestinationTarget,
    select_artifacts,
)
from worklist.destinations.security import (
    HttpAuth,
    TlsOptions,
    check_credential_transport,
    warn_insecure_use,
)

__all__ = ["DicomWebTarget", "StowDestination"]


@dataclass(frozen=True)
class DicomWebTarget:
    """A ``[destinations.NAME]`` section of ``type = "dicomweb"``."""

    base_url: str
    auth: HttpAuth = field(default_factory=HttpAuth.none)
    tls: TlsOptions | None = None
    timeout_seconds: float = 60.0
    outputs: tuple[str, ...] = ("sr", "gsps")
    languages: tuple[str, ...] = ()
    name: str = ""
    retry_for_seconds: float | None = None
    type: ClassVar[str] = "dicomweb"

    def __post_init__(self) -> None:
        check_credential_transport(self.base_url, self.auth, self.tls, name=self.name)

    @property
    def insecure(self) -> bool:
        """Certificates not checked, a credential allowed over plain HTTP."""
        return self.tls is not None and not self.tls.verify


class StowDestination:
    """POSTs the target's DICOM objects to ``{base_url}/studies`` in one multipart request."""

    type: ClassVar[str] = "dicomweb"

    def deliver(
        self, artifacts: Sequence[ArtifactFile], target: DestinationTarget
    ) -> DeliveryOutcome:
        if not isinstance(target, DicomWebTarget):
            raise TypeError(
                f"a {self.type} destination delivers to a DicomWebTarget, "
                f"not {type(target).__name__}"
            )
        files = select_artifacts(artifacts, target)
        if not files:
            return DeliveryOutcome.delivered("nothing to send")
        if target.insecure:
            warn_insecure_use(target.name, target.base_url)
        try:
            result = store_instances(
                target.base_url,
                [a.path for a in files],
                auth=target.auth,
                tls=target.tls,
                timeout=target.timeout_seconds,
            )
        except InvalidStowRequestError as exc:
            return DeliveryOutcome.final(f"STOW-RS {target.name}: {exc}")
        counts = (
            f"{len(result.stored)} stored, {len(result.retryable)} to retry, "
            f"{len(result.final)} refused of {len(result.instances)}"
        )
        log_text = f"STOW-RS {target.name}: HTTP {result.status_code or '-'}, {counts}"
        if result.complete:
            return DeliveryOutcome.delivered(f"STOW-RS {target.name}: {counts}")
        answer = f"STOW-RS {target.name}: {counts}: {result.peer_answer}"
        failed = result.final or result.retryable
        reasons = sorted({i.reason for i in failed if i.reason})
        if reasons:
            answer += f" ({'; '.join(reasons)[:300]})"
        if result.final:
            return DeliveryOutcome.final(answer, log_text=log_text)
        return DeliveryOutcome.retryable(
            answer, log_text=log_text, retry_after=result.retry_after, remaining=result.to_retry
        )

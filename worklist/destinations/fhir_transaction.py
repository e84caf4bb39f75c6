"""Destination type ``fhir``: a FHIR R4 transaction Bundle POSTed to an EHR's FHIR server.

The HTTP client is :func:`worklist.destinations.fhir.post_transaction`; this module
adapts it to the destination protocol. The Bundle uses only conditional interactions
(R4 http.html#cond-update), so posting it again creates nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import httpx

from worklist.destinations.fhir import (
    PermanentFhirError,
    TransientFhirError,
    post_transaction,
)
from worklist.destinations.protocol import ArtifactFile, DeliveryOutcome, DestinationTarget
from worklist.destinations.security import (
    HttpAuth,
    TlsOptions,
    check_credential_transport,
    warn_insecure_use,
)
from worklist.errors import InvalidFhirRequestError

__all__ = ["FhirTarget", "FhirTransactionDestination", "bundle_filename", "is_bundle_for"]


@dataclass(frozen=True)
class FhirTarget:
    """A ``[destinations.NAME]`` section of ``type = "fhir"``."""

    url: str
    auth: HttpAuth
    timeout_seconds: float = 30.0
    primary_language: str = "en"
    patient_identifier_system: str | None = None
    #: TLS options for an https URL (None: the system's trust store, certificates checked);
    #: ``verify=False`` is the destination's ``insecure = true``.
    tls: TlsOptions | None = None
    name: str = ""
    outputs: tuple[str, ...] = ("fhir",)
    languages: tuple[str, ...] = ()
    retry_for_seconds: float | None = None
    type: ClassVar[str] = "fhir"

    def __post_init__(self) -> None:
        check_credential_transport(self.url, self.auth, self.tls, name=self.name)

    @property
    def insecure(self) -> bool:
        """Certificates not checked, a credential allowed over plain HTTP."""
        return self.tls is not None and not self.tls.verify


def bundle_filename(name: str) -> str:
    """The file the export writes a destination's Bundle to (its language and identifier system)."""
    return f"fhir-{name}.json"


def is_bundle_for(filename: str, name: str) -> bool:
    """Whether ``filename`` is destination ``name``'s Bundle: ``fhir-NAME.json`` of the model's
    set, ``fhir-NAME-signoffN.json`` of a sign-off's (a delivery gets only its set's files)."""
    return filename == bundle_filename(name) or re.fullmatch(
        rf"fhir-{re.escape(name)}-signoff[1-9][0-9]*\.json", filename
    ) is not None


class FhirTransactionDestination:
    """POSTs the Bundle exported for this target (``fhir-NAME.json``) as one transaction."""

    type: ClassVar[str] = "fhir"

    def deliver(
        self, artifacts: Sequence[ArtifactFile], target: DestinationTarget
    ) -> DeliveryOutcome:
        if not isinstance(target, FhirTarget):
            raise TypeError(
                f"a {self.type} destination delivers to a FhirTarget, not {type(target).__name__}"
            )
        name = target.name
        bundles = [
            a for a in artifacts if a.kind == "fhir" and is_bundle_for(a.path.name, name)
        ]
        if not bundles:
            return DeliveryOutcome.final(f"no FHIR bundle was exported for {name!r}")
        if target.insecure:
            warn_insecure_use(name, target.url)
        tls = target.tls if target.tls is not None else TlsOptions()
        # no proxy or CA settings from the environment: the destination's own TLS options only
        client = httpx.Client(verify=tls.ssl_context(), follow_redirects=False, trust_env=False)
        try:
            post_transaction(
                target.url,
                bundles[0].path.read_bytes(),
                auth=target.auth,
                timeout=target.timeout_seconds,
                client=client,
            )
        except TransientFhirError as exc:
            return DeliveryOutcome.retryable(
                f"FHIR {name}: {exc}",
                retry_after=exc.retry_after,
                log_text=f"FHIR {name}: HTTP {exc.status_code or '-'}",
            )
        except PermanentFhirError as exc:
            return DeliveryOutcome.final(
                f"FHIR {name}: {exc}",
                peer_document=exc.operation_outcome,
                log_text=f"FHIR {name}: HTTP {exc.status_code}",
            )
        except (
            InvalidFhirRequestError
        ) as exc:  # the endpoint or bundle is unusable (bad URL, not a transaction)
            return DeliveryOutcome.final(f"FHIR {name}: {exc}")
        finally:
            client.close()
        return DeliveryOutcome.delivered()

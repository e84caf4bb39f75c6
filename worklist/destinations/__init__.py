"""Destinations RadGround delivers results to.

One protocol, :class:`Destination` (``deliver(artifacts, target) -> DeliveryOutcome``,
:mod:`worklist.destinations.protocol`), one retry policy shared by all
(:class:`RetryPolicy`, :mod:`worklist.destinations.retry`), and the destination
types keyed by their configured ``type`` (:data:`DESTINATION_TYPES`):

* ``dicom`` -- :mod:`worklist.destinations.dicom_store` (C-STORE through ``dicom_node.scu``);
* ``dicomweb`` -- :mod:`worklist.destinations.stow` (STOW-RS);
* ``fhir`` -- :mod:`worklist.destinations.fhir_transaction` (FHIR R4 transaction);
* ``hl7`` -- :mod:`worklist.destinations.hl7_mllp` (ORU^R01 over MLLP).

The HTTP and MLLP protocol clients they use, one module per protocol:

* :mod:`worklist.destinations.fhir` -- FHIR R4 transaction (http.html#transaction);
* :mod:`worklist.destinations.dicomweb` -- DICOMweb STOW-RS (PS3.18 §10.5);
* :mod:`worklist.destinations.mllp` -- HL7 v2 messages over MLLP (HL7 v2.5.1 ch. 2,
  Appendix C);
* :mod:`worklist.destinations.security` -- HTTP credentials and TLS options they share.

Each client takes explicit arguments (no settings, no database, no Celery) and
classifies every failure once, as retryable or final, for the delivery layer.
"""

from worklist.destinations.dicom_store import DicomStoreDestination, DicomTarget
from worklist.destinations.dicomweb import (
    DICOM_JSON,
    FailureReason,
    InstanceOutcome,
    StowInstanceResult,
    StowResult,
    WarningReason,
    classify_failure_reason,
    make_client,
    store_instances,
)
from worklist.destinations.errors import InvalidMllpRequestError, InvalidStowRequestError
from worklist.destinations.fhir_transaction import FhirTarget, FhirTransactionDestination
from worklist.destinations.hl7_mllp import Hl7Target, MllpDestination
from worklist.destinations.mllp import (
    AckCode,
    ErrorCondition,
    MllpOutcome,
    MllpResult,
    message_control_id,
    send_message,
)
from worklist.destinations.protocol import (
    ArtifactFile,
    DeliveryOutcome,
    DeliveryStatus,
    Destination,
    DestinationTarget,
    select_artifacts,
)
from worklist.destinations.registry import (
    DESTINATION_TYPES,
    UnknownDestinationTypeError,
    destination_for,
)
from worklist.destinations.retry import DEFAULT_RETRY_FOR_SECONDS, RetryPolicy
from worklist.destinations.security import (
    AuthKind,
    HttpAuth,
    PlainTextCredentialError,
    TlsOptions,
)
from worklist.destinations.stow import DicomWebTarget, StowDestination

__all__ = [
    "DEFAULT_RETRY_FOR_SECONDS",
    "DESTINATION_TYPES",
    "DICOM_JSON",
    "AckCode",
    "ArtifactFile",
    "AuthKind",
    "DeliveryOutcome",
    "DeliveryStatus",
    "Destination",
    "DestinationTarget",
    "DicomStoreDestination",
    "DicomTarget",
    "DicomWebTarget",
    "ErrorCondition",
    "FailureReason",
    "FhirTarget",
    "FhirTransactionDestination",
    "Hl7Target",
    "HttpAuth",
    "InstanceOutcome",
    "InvalidMllpRequestError",
    "InvalidStowRequestError",
    "MllpDestination",
    "MllpOutcome",
    "MllpResult",
    "PlainTextCredentialError",
    "RetryPolicy",
    "StowDestination",
    "StowInstanceResult",
    "StowResult",
    "TlsOptions",
    "UnknownDestinationTypeError",
    "WarningReason",
    "classify_failure_reason",
    "destination_for",
    "make_client",
    "message_control_id",
    "select_artifacts",
    "send_message",
    "store_instances",
]

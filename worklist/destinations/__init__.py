"""Network destinations RadGround delivers results to, one module per protocol.

* :mod:`worklist.destinations.dicomweb` -- DICOMweb STOW-RS (PS3.18 §10.5);
* :mod:`worklist.destinations.mllp` -- HL7 v2 messages over MLLP (HL7 v2.5.1 ch. 2,
  Appendix C);
* :mod:`worklist.destinations.security` -- HTTP credentials and TLS options they share.

Each client takes explicit arguments (no settings, no database, no Celery) and
classifies every failure once, as retryable or final, for the delivery layer.
"""

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
from worklist.destinations.mllp import (
    AckCode,
    ErrorCondition,
    MllpOutcome,
    MllpResult,
    message_control_id,
    send_message,
)
from worklist.destinations.security import AuthKind, HttpAuth, TlsOptions

__all__ = [
    "DICOM_JSON",
    "AckCode",
    "AuthKind",
    "ErrorCondition",
    "FailureReason",
    "HttpAuth",
    "InstanceOutcome",
    "InvalidMllpRequestError",
    "InvalidStowRequestError",
    "MllpOutcome",
    "MllpResult",
    "StowInstanceResult",
    "StowResult",
    "TlsOptions",
    "WarningReason",
    "classify_failure_reason",
    "make_client",
    "message_control_id",
    "send_message",
    "store_instances",
]

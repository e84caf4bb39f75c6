"""HL7 v2.5.1 ORU^R01 export of a RadGround result (built and validated with hl7apy).

See :mod:`exporters.hl7.oru` for the message layout.
"""

from exporters.hl7.enum import ProcessingId, ResultStatus, ValueType
from exporters.hl7.exporter import HL7_MEDIA_TYPE, HL7Exporter, HL7Options
from exporters.hl7.header import OrderHeader, PatientHeader, read_order, read_patient
from exporters.hl7.oru import (
    CHARACTER_SET,
    HL7_VERSION,
    HL7ExportError,
    ORUMessage,
    build_oru_r01,
    message_control_id,
)

__all__ = [
    "CHARACTER_SET",
    "HL7_MEDIA_TYPE",
    "HL7_VERSION",
    "HL7ExportError",
    "HL7Exporter",
    "HL7Options",
    "ORUMessage",
    "OrderHeader",
    "PatientHeader",
    "ProcessingId",
    "ResultStatus",
    "ValueType",
    "build_oru_r01",
    "message_control_id",
    "read_order",
    "read_patient",
]

"""Logging for RadGround's entry points (library modules only get loggers).

No log line at any level carries patient data: our modules log hashed UIDs
(:func:`dicom_node.uids.short_uid`), and pynetdicom's own handlers, which can
dump identifiers and data sets at DEBUG, are switched off here.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger for a RadGround process (idempotent)."""
    import pydicom.config
    from pynetdicom import _config as pynetdicom_config

    # pydicom's validation warnings quote the offending value (a UID, a name):
    # received data is validated by our own code, which logs hashed UIDs only.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_radground", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._radground = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # pynetdicom logs every association at INFO and quotes non-conformant UIDs in
    # its warnings; keep only its errors.
    logging.getLogger("pynetdicom").setLevel(max(logging.ERROR, root.level))
    # highdicom logs the UIDs of the data sets it copies from at INFO.
    logging.getLogger("highdicom").setLevel(max(logging.WARNING, root.level))

"""Logging for RadGround's entry points (library modules only get loggers).

No log line at any level carries patient data: our modules log hashed UIDs
(:func:`dicom_node.uids.short_uid`), and pynetdicom's own handlers, which can
dump identifiers and data sets at DEBUG, are switched off here.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging", "silence_value_warnings"]

_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger for a RadGround process (idempotent)."""
    from pynetdicom import _config as pynetdicom_config

    silence_value_warnings()
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
    # httpx logs every request's whole URL at INFO (a DICOMweb path can name a study), and
    # httpcore the peer's response headers at DEBUG (Location, Set-Cookie); the destinations
    # log their own line for each request, with the endpoint only.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def silence_value_warnings() -> None:
    """Stop pydicom from warning about invalid values it reads (idempotent).

    pydicom's validation warnings (``Invalid value for VR UI: '…'``) quote the
    offending value, a UID or a name, on stderr: received data is validated by
    our own code, which reports hashed UIDs only. This uses pydicom's documented
    switch, ``pydicom.config.settings.reading_validation_mode``.
    """
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

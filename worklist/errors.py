"""The root of the worklist's exceptions.

Every exception the worklist raises on purpose derives from
:class:`WorklistError`, so callers (the CLI, the tasks) catch it rather than
``ValueError`` or ``Exception`` wholesale. Those documented as ``ValueError``
keep that base too.
"""

from __future__ import annotations

__all__ = [
    "IncompatibleKombuError",
    "InvalidFhirRequestError",
    "InvalidFilterError",
    "JobActionError",
    "NotFoundError",
    "WorklistError",
]


class WorklistError(Exception):
    """Something the worklist refuses or cannot do; the message says what and why."""


class IncompatibleKombuError(WorklistError, RuntimeError):
    """The embedded broker's transport cannot be used with the installed kombu (see
    docs/third-party-patches.md); the message names the stock fallback."""


class JobActionError(WorklistError, ValueError):
    """An operator action (retry, reprocess) does not apply: no such job or study, wrong state."""


class NotFoundError(JobActionError, LookupError):
    """An operator action names a job, delivery or study that is not in the database."""


class InvalidFilterError(WorklistError, ValueError):
    """A filter or page of a read view (:mod:`worklist.views`) is unusable; ``parameter`` names
    the filter field at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.reason = message


class InvalidFhirRequestError(WorklistError, ValueError):
    """A FHIR transaction cannot be sent as asked: the endpoint URL or the Bundle is unusable."""

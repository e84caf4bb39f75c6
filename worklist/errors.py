"""The root of the worklist's exceptions.

Every exception the worklist raises on purpose derives from
:class:`WorklistError`, so callers (the CLI, the tasks) catch it rather than
``ValueError`` or ``Exception`` wholesale. Those documented as ``ValueError``
keep that base too.
"""

from __future__ import annotations

__all__ = ["IncompatibleKombuError", "InvalidFhirRequestError", "JobActionError", "WorklistError"]


class WorklistError(Exception):
    """Something the worklist refuses or cannot do; the message says what and why."""


class IncompatibleKombuError(WorklistError, RuntimeError):
    """The embedded broker's transport cannot be used with the installed kombu (see
    docs/third-party-patches.md); the message names the stock fallback."""


class JobActionError(WorklistError, ValueError):
    """An operator action (retry, reprocess) does not apply: no such job or study, wrong state."""


class InvalidFhirRequestError(WorklistError, ValueError):
    """A FHIR transaction cannot be sent as asked: the endpoint URL or the Bundle is unusable."""

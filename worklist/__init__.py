"""worklist: study index and completion, routing, jobs, Celery tasks and deliveries.

Its exceptions derive from :class:`WorklistError` (:mod:`worklist.errors`).
"""

from worklist.errors import (
    IncompatibleKombuError,
    InvalidFhirRequestError,
    InvalidFilterError,
    JobActionError,
    NotFoundError,
    WorklistError,
)

__all__ = [
    "IncompatibleKombuError",
    "InvalidFhirRequestError",
    "InvalidFilterError",
    "JobActionError",
    "NotFoundError",
    "WorklistError",
]

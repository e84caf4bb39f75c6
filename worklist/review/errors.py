"""The review's exceptions (the web maps each to one HTTP status).

Every one derives from :class:`ReviewError`, itself a :class:`~worklist.errors.WorklistError`.
"""

from __future__ import annotations

from worklist.errors import WorklistError

__all__ = [
    "ExportDirectoryNotEmptyError",
    "InvalidPeriodError",
    "NoSignedReviewsError",
    "ReviewConflictError",
    "ReviewDataError",
    "ReviewError",
    "ReviewInputError",
    "ReviewNotFoundError",
]


class ReviewError(WorklistError):
    """A review action that cannot be done; the message says what and why."""


class ReviewNotFoundError(ReviewError, LookupError):
    """No such job, or no review is possible for it (no report, or not finished yet) (HTTP 404)."""


class ReviewConflictError(ReviewError):
    """The review changed under the caller: signed, superseded, or changed by someone since the
    version they loaded (HTTP 409). The message names who and when."""


class ReviewInputError(ReviewError, ValueError):
    """A change that is not valid: a bad box, an unknown language, an empty text, a rejection
    without a reason, a sign-off while findings are pending (HTTP 400/422)."""


class ReviewDataError(ReviewError):
    """The reviewed-findings dataset or the figures cannot be made as asked
    (:mod:`worklist.review.dataset`, :mod:`worklist.review.figures`); the CLI prints the message
    and exits 1."""


class InvalidPeriodError(ReviewDataError, ValueError):
    """The period is empty (``since`` not before ``until``) or its ends have no timezone."""


class ExportDirectoryNotEmptyError(ReviewDataError, FileExistsError):
    """The export's folder already holds files (an export never mixes with, or overwrites,
    another)."""


class NoSignedReviewsError(ReviewDataError, LookupError):
    """No review was signed in the period: there is nothing to export."""

"""Errors of the reviewed-findings dataset and figures (:mod:`worklist.review.dataset`,
:mod:`worklist.review.figures`); the CLI turns each into its message and exit code 1."""

from __future__ import annotations

from worklist.errors import WorklistError

__all__ = [
    "ExportDirectoryNotEmptyError",
    "InvalidPeriodError",
    "NoSignedReviewsError",
    "ReviewDataError",
]


class ReviewDataError(WorklistError):
    """The dataset or the figures cannot be made as asked; the message says why."""


class InvalidPeriodError(ReviewDataError, ValueError):
    """The period is empty (``since`` not before ``until``) or its ends have no timezone."""


class ExportDirectoryNotEmptyError(ReviewDataError, FileExistsError):
    """The export's folder already holds files (an export never mixes with, or overwrites,
    another)."""


class NoSignedReviewsError(ReviewDataError, LookupError):
    """No review was signed in the period: there is nothing to export."""

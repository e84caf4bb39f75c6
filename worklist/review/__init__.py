"""Radiologist review and sign-off, finding by finding (issue #15).

The web console calls only what this package exports: open a job's review, decide about each
finding (accept, reject with a reason, edit its texts, move its box, change its concept), add a
finding, send the review back or sign it. Signing builds the job's signed artifact set
(:mod:`worklist.review.signoff`, run by the export step). Exceptions derive from
:class:`ReviewError` (a :class:`~worklist.errors.WorklistError`); the model's region tasks for
the review page are in :mod:`worklist.review.assist`.
"""

from worklist.review.errors import (
    ReviewConflictError,
    ReviewError,
    ReviewInputError,
    ReviewNotFoundError,
)
from worklist.review.service import add_finding, decide, get_review, open_review, send_back
from worklist.review.signing import sign
from worklist.review.views import (
    AwaitingReview,
    FindingChange,
    ReviewFindingView,
    ReviewImage,
    ReviewView,
)
from worklist.review.worklist_view import awaiting_reviews

__all__ = [
    "AwaitingReview",
    "FindingChange",
    "ReviewConflictError",
    "ReviewError",
    "ReviewFindingView",
    "ReviewImage",
    "ReviewInputError",
    "ReviewNotFoundError",
    "ReviewView",
    "add_finding",
    "awaiting_reviews",
    "decide",
    "get_review",
    "open_review",
    "send_back",
    "sign",
]

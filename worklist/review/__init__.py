"""Radiologist review and sign-off, finding by finding (issue #15).

Exceptions derive from :class:`~worklist.review.errors.ReviewError` (a
:class:`~worklist.errors.WorklistError`); the model's region tasks for the review page are in
:mod:`worklist.review.assist`.
"""

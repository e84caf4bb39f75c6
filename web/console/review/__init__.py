"""The console's review pages: the radiologists' worklist, a job's review page (viewer, findings,
the model's region tasks, sign-off) and the per-class figures.

The review page is server-rendered like the rest of the console; its script
(``static/review.js``) calls the review API (:mod:`web.api.review`) with the session's CSRF token
and, after each change, fetches the page again and swaps its parts in place.
"""

from web.console.review.routes import router

__all__ = ["router"]

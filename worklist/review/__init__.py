"""A radiologist's review of a job's findings: the service the web calls (helper "flow"), the
dataset of reviewed findings (:mod:`worklist.review.dataset`) and the per-class figures
(:mod:`worklist.review.figures`)."""

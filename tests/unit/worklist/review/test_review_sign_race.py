"""Two radiologists sign the same review at the same moment on the real PostgreSQL server: one
wins, the other is told who signed and when, and the export is enqueued once."""

from __future__ import annotations

import threading
import time

import pytest

from tests.unit.worklist.review.conftest import add_reviewed_job
from worklist.jobs_models import Job
from worklist.review import FindingChange, ReviewConflictError, decide, get_review, sign
from worklist.review_models import FindingDecision


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_radiologists_race_to_sign_one_wins_the_other_is_told(ctx, radiologists):
    job = add_reviewed_job(ctx)
    version = 1
    with ctx.sessions.begin() as session:
        for uid in job.uids:
            version = decide(session, job.job_id, uid,
                             FindingChange(decision=FindingDecision.ACCEPTED),
                             version=version, account="ann")
    outcomes: dict[str, object] = {}
    start = threading.Barrier(3)

    def sign_as(account: str) -> None:
        start.wait()
        try:
            outcomes[account] = sign(ctx, job.job_id, version=version, account=account,
                                     languages=["en", "zh-CN"])
        except ReviewConflictError as exc:
            outcomes[account] = exc

    # hold the job's row so that both sign-offs are waiting on it when it is released
    with ctx.sessions.begin() as blocker:
        blocker.get(Job, job.job_id, with_for_update=True)
        threads = [threading.Thread(target=sign_as, args=(a,)) for a in radiologists]
        for thread in threads:
            thread.start()
        start.wait()
        time.sleep(0.5)
        assert outcomes == {}  # both are blocked on the lock
    for thread in threads:
        thread.join(timeout=30)
    [winner] = [a for a, o in outcomes.items() if o == 1]
    [loser] = [a for a in radiologists if a != winner]
    assert isinstance(outcomes[loser], ReviewConflictError)
    assert f"already signed by {winner} at " in str(outcomes[loser])
    assert ctx.enqueue.sent == [("export", job.job_id)]
    with ctx.sessions() as session:
        view = get_review(session, job.job_id)
    assert (view.state, view.signed_by, view.signoff) == ("signed", winner, 1)

"""The console's review pages through the real application and review service: the worklist,
the review page for a radiologist (claims it, every control) and for a viewer (read-only), the
signed and superseded banners, the figures page and the job page's link."""

from __future__ import annotations

import json
import re

from tests.index_rows import add_job
from worklist.db import utcnow
from worklist.jobs_models import JobState
from worklist.models import Study
from worklist.review_models import Review, ReviewState

ACCEPTED = {"decision": "accepted"}


def _page_data(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="review-data" data-review-part>(.*?)'
                      r"</script>", html, re.DOTALL)
    assert found, "no review data on the page"
    return json.loads(found.group(1))


def test_the_radiologists_worklist_page(ann, vera, reviewed):
    page = ann.client.get("/reviews")
    assert page.status_code == 200
    assert 'href="/reviews" aria-current="page">Review</a>' in page.text
    assert f'data-review-job="{reviewed.job_id}"' in page.text
    assert f"Review job {reviewed.job_id}" in page.text and "routine" in page.text
    assert re.search(r'<span class="hint">\([0-9.]+ s\)</span>', page.text)  # waiting so long
    assert ann.client.get("/reviews?modality=CT").text.count("data-review-job=") == 0
    assert ann.client.get("/reviews?priority=stat").text.count("data-review-job=") == 0
    refused = ann.client.get("/reviews?waited=7")
    assert refused.status_code == 400 and 'aria-invalid="true"' in refused.text
    # a viewer may read the worklist but has no Review item in the menu
    assert ">Review</a>" not in vera.client.get("/jobs").text


def test_a_radiologist_opening_the_page_claims_it_and_gets_every_control(ann, bob, reviewed):
    page = ann.client.get(f"/jobs/{reviewed.job_id}/review")
    assert page.status_code == 200
    html = page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script src="/static/console/review-viewer.js" defer></script>' in html
    assert '<script src="/static/console/review.js" defer></script>' in html
    assert html.count('class="finding-card') == 3
    assert html.count('<g class="finding-box') == 3
    assert html.count('data-action="accept"') == 3 and html.count('data-action="reject"') == 3
    assert 'viewBox="0 0 160 128"' in html
    assert f'/api/v1/jobs/{reviewed.job_id}/review/images/{reviewed.image_uid}/frames/1.png' in html
    assert "可见心脏肥大。" in html and 'lang="zh-CN"' in html
    assert 'name="languages" value="en"' in html and 'name="languages" value="zh-CN"' in html
    assert "is <strong>not</strong> published as verified" in html
    assert 'value="draw"' in html and 'value="ask"' in html and 'id="locate-form"' in html
    assert "3 findings still pending" in html
    data = _page_data(html)
    assert data["claimed_by"] == "ann" and data["version"] == 1
    # the second radiologist sees who has it open
    other = bob.client.get(f"/jobs/{reviewed.job_id}/review").text
    assert "<strong>ann</strong> has this review open too" in other


def test_a_viewer_sees_the_page_read_only(vera, reviewed):
    page = vera.client.get(f"/jobs/{reviewed.job_id}/review")
    assert page.status_code == 200
    html = page.text
    assert 'data-editable="false"' in html
    for control in ('data-action="accept"', 'data-action="reject"', 'data-action="edit"',
                    'id="sign-form"', 'value="draw"', 'id="locate-form"', 'class="handle'):
        assert control not in html, control
    assert "signing it needs a radiologist" in html
    assert _page_data(html)["claimed_by"] is None  # reading does not claim


def test_signed_and_superseded_reviews_are_read_only_with_a_banner(ann, reviewed, web_context):
    version = 1
    for uid in reviewed.uids:
        version = ann.call("PATCH", f"/api/v1/jobs/{reviewed.job_id}/review/findings/{uid}",
                           {"version": version, **ACCEPTED}).json()["version"]
    assert ann.call("POST", f"/api/v1/jobs/{reviewed.job_id}/review/sign",
                    {"version": version, "languages": ["en"]}).status_code == 202
    html = ann.client.get(f"/jobs/{reviewed.job_id}/review").text
    assert "<strong>Signed</strong> by ann at" in html and "verified in en" in html
    assert 'data-action="accept"' not in html and 'id="sign-form"' not in html
    with web_context.sessions.begin() as session:
        study = session.get(Study, reviewed.study_pk)
        newer = add_job(session, study, state=JobState.AWAITING_REVIEW, finished_at=utcnow())
        review = session.query(Review).one()
        review.state, review.superseded_by_job_id = ReviewState.SUPERSEDED, newer.id
    html = ann.client.get(f"/jobs/{reviewed.job_id}/review").text
    assert "<strong>Superseded.</strong>" in html
    assert f'href="/jobs/{newer.id}/review">review job {newer.id}</a>' in html


def test_no_review_page_for_an_unknown_job(ann):
    page = ann.client.get("/jobs/424242/review")
    assert page.status_code == 404 and "no job 424242" in page.text


def test_the_job_page_links_radiologists_to_the_review(ann, vera, reviewed):
    html = ann.client.get(f"/jobs/{reviewed.job_id}").text
    assert f'href="/jobs/{reviewed.job_id}/review">Review</a>' in html
    viewer = vera.client.get(f"/jobs/{reviewed.job_id}").text
    assert "Waiting for a radiologist's sign-off" in viewer
    assert f'class="button primary" href="/jobs/{reviewed.job_id}/review"' not in viewer


def test_the_figures_page(ann, reviewed):
    version = 1
    moved = {"decision": "accepted", "region": {
        "sop_instance_uid": reviewed.image_uid,
        "box": {"x_min": 10, "y_min": 10, "x_max": 60, "y_max": 60}}}  # half the model's box
    for uid, change in zip(reviewed.uids, (moved, {"decision": "rejected",
                                                      "reject_reason": "duplicate"}, ACCEPTED),
                           strict=True):
        version = ann.call("PATCH", f"/api/v1/jobs/{reviewed.job_id}/review/findings/{uid}",
                           {"version": version, **change}).json()["version"]
    ann.call("POST", f"/api/v1/jobs/{reviewed.job_id}/review/sign",
             {"version": version, "languages": ["en", "zh-CN"]})
    html = ann.client.get("/reviews/figures").text
    assert 'data-class="Effusion"' in html and "Duplicate 1" in html
    row = re.search(r'<tr data-class="Cardiomegaly">(.*?)</tr>', html, re.DOTALL).group(1)
    assert "100%" in row and "0.50" in row
    bad = ann.client.get("/reviews/figures?since=2026-12-10&until=2026-12-01")
    assert bad.status_code == 400 and "on or after" in bad.text

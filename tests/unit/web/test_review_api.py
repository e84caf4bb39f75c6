"""The review API through the real application and the real review service: reads, decisions,
added findings, the model's region tasks, sign-off, sending back, the worklist, the figures and
the viewer's windowed frames; 401/403/404/409/422 answers (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from PIL import Image

from engine.report import Box, ImageRef, Region, Text
from tests.unit.web.review_fixtures import COLUMNS, ROWS
from worklist.accounts_models import Role
from worklist.context import StepError
from worklist.db import utcnow
from worklist.review import assist
from worklist.review.assist import RegionSuggestion
from worklist.review_models import Review

ACCEPTED = {"decision": "accepted"}


def _review(session_or_client, job_id: int) -> dict:
    client = getattr(session_or_client, "client", session_or_client)
    answer = client.get(f"/api/v1/jobs/{job_id}/review")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _finding_path(job_id: int, tracking_uid: str) -> str:
    return f"/api/v1/jobs/{job_id}/review/findings/{tracking_uid}"


def test_reading_a_review_needs_read_and_names_what_is_missing(client, token_for, reviewed):
    path = f"/api/v1/jobs/{reviewed.job_id}/review"
    assert client.get(path).status_code == 401
    token = token_for(Role.VIEWER, "read")
    answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["state"] == "open" and body["version"] == 1
    assert body["languages"] == ["en", "zh-CN"]
    assert [f["tracking_uid"] for f in body["findings"]] == reviewed.uids
    first = body["findings"][0]
    assert first["decision"] == "pending" and first["model"] == first["final"]
    assert first["final"]["description"] == {"en": "Cardiomegaly is seen.",
                                             "zh-CN": "可见心脏肥大。"}
    assert first["final"]["regions"][0]["box"] == {"x_min": 10.0, "y_min": 10.0,
                                                   "x_max": 110.0, "y_max": 60.0}
    assert body["images"] == [{
        "sop_instance_uid": reviewed.image_uid, "sop_class_uid": body["images"][0]["sop_class_uid"],
        "frame_count": 1, "rows": ROWS, "columns": COLUMNS, "series_description": "",
        "instance_number": 1,
    }]
    missing = client.get("/api/v1/jobs/999999/review",
                         headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "999999" in missing.json()["detail"]


def test_opening_claims_the_review_for_the_radiologist_only(ann, bob, vera, reviewed):
    path = f"/api/v1/jobs/{reviewed.job_id}/review"
    assert ann.call("POST", path).json()["claimed_by"] == "ann"
    assert bob.call("POST", path).json()["claimed_by"] == "ann"  # shown, not taken
    refused = vera.call("POST", path)
    assert refused.status_code == 403 and "'review' permission" in refused.json()["detail"]
    assert ann.call("POST", path, csrf=False).status_code == 403  # no CSRF token


def test_accept_reject_edit_and_move_finding_by_finding(ann, reviewed):
    job, (first, second, third) = reviewed.job_id, reviewed.uids
    answer = ann.call("PATCH", _finding_path(job, first), {"version": 1, **ACCEPTED})
    assert answer.status_code == 200 and answer.json() == {"version": 2}
    answer = ann.call("PATCH", _finding_path(job, second), {
        "version": 2, "decision": "rejected", "reject_reason": "not_present",
        "reject_note": "old scar"})
    assert answer.json() == {"version": 3}
    answer = ann.call("PATCH", _finding_path(job, third), {
        "version": 3, "description": {"en": "Small nodule, right upper zone.",
                                      "zh-CN": "右上肺野小结节。"},
        "region": {"sop_instance_uid": reviewed.image_uid, "frame": None,
                   "box": {"x_min": 20, "y_min": 20, "x_max": 70, "y_max": 50}},
        "concept": {"value": "27925004", "scheme_designator": "SCT", "meaning": "Nodule"}})
    assert answer.status_code == 200, answer.text
    body = _review(ann, job)
    decided = {f["tracking_uid"]: f for f in body["findings"]}
    assert decided[first]["decision"] == "accepted" and decided[first]["decided_by"] == "ann"
    assert (decided[second]["decision"], decided[second]["reject_reason"],
            decided[second]["reject_note"]) == ("rejected", "not_present", "old scar")
    moved = decided[third]
    assert moved["edited_languages"] == ["en", "zh-CN"] and moved["box_moved"] is True
    assert 0 < moved["box_iou"] < 1
    assert moved["final"]["description"]["zh-CN"] == "右上肺野小结节。"
    assert moved["final"]["concept"]["value"] == "27925004"
    assert moved["model"]["regions"][0]["box"]["x_min"] == 12.0  # the model's box is kept


def test_refusals_say_why(ann, vera, reviewed):
    job, first = reviewed.job_id, reviewed.uids[0]
    no_reason = ann.call("PATCH", _finding_path(job, first),
                         {"version": 1, "decision": "rejected"})
    assert no_reason.status_code == 422
    assert no_reason.json()["type"].endswith("/invalid-review-input")
    assert "reason" in no_reason.json()["detail"]
    bad_box = ann.call("PATCH", _finding_path(job, first), {
        "version": 1, "region": {"sop_instance_uid": reviewed.image_uid,
                                 "box": {"x_min": 50, "y_min": 10, "x_max": 40, "y_max": 20}}})
    assert bad_box.status_code == 422 and "x_min < x_max" in bad_box.json()["detail"]
    no_version = ann.call("PATCH", _finding_path(job, first), ACCEPTED)
    assert no_version.status_code == 400 and no_version.json()["parameter"] == "version"
    unknown = ann.call("PATCH", _finding_path(job, "1.2.3.999"), {"version": 1, **ACCEPTED})
    assert unknown.status_code == 404
    assert vera.call("PATCH", _finding_path(job, first),
                     {"version": 1, **ACCEPTED}).status_code == 403
    assert ann.call("PATCH", _finding_path(job, first), {"version": 1, **ACCEPTED},
                    csrf=False).status_code == 403
    assert ann.call("PATCH", _finding_path(job, first), {"version": 1, **ACCEPTED}).json() == {
        "version": 2}
    stale = ann.call("PATCH", _finding_path(job, reviewed.uids[1]), {"version": 1, **ACCEPTED})
    assert stale.status_code == 409
    assert stale.json()["detail"].startswith(f"job {job}: changed by ann since you loaded it")


def test_adding_a_drawn_finding(ann, reviewed):
    answer = ann.call("POST", f"/api/v1/jobs/{reviewed.job_id}/review/findings", {
        "version": 1, "label": {"en": "Rib fracture", "zh-CN": "肋骨骨折"},
        "description": {"en": "Fracture of a left rib.", "zh-CN": "左侧肋骨骨折。"},
        "region": {"sop_instance_uid": reviewed.image_uid,
                   "box": {"x_min": 100, "y_min": 80, "x_max": 140, "y_max": 110}}})
    assert answer.status_code == 201, answer.text
    added = answer.json()
    assert added["version"] == 2
    last = _review(ann, reviewed.job_id)["findings"][-1]
    assert last["tracking_uid"] == added["tracking_uid"]
    assert (last["origin"], last["model"], last["final"]["label"]["en"]) == (
        "radiologist", None, "Rib fracture")
    as_model = ann.call("POST", f"/api/v1/jobs/{reviewed.job_id}/review/findings", {
        "version": 2, "label": {"en": "x"}, "description": {"en": "x"}, "origin": "model",
        "region": {"sop_instance_uid": reviewed.image_uid,
                   "box": {"x_min": 1, "y_min": 1, "x_max": 9, "y_max": 9}}})
    assert as_model.status_code == 422 and as_model.json()["parameter"] == "origin"


def test_sign_needs_every_finding_decided_then_the_loser_of_a_race_is_told_who_signed(
    ann, bob, reviewed, web_context
):
    job = reviewed.job_id
    sign = f"/api/v1/jobs/{job}/review/sign"
    pending = ann.call("POST", sign, {"version": 1, "languages": ["en", "zh-CN"]})
    assert pending.status_code == 422 and "still pending" in pending.json()["detail"]
    version = 1
    for uid in reviewed.uids:
        version = ann.call("PATCH", _finding_path(job, uid), {"version": version, **ACCEPTED}
                           ).json()["version"]
    unknown_language = ann.call("POST", sign, {"version": version, "languages": ["fr"]})
    assert unknown_language.status_code == 422
    assert bob.call("POST", sign, {"version": version, "languages": []}).status_code == 400
    # both loaded the same version; ann signs first
    signed = ann.call("POST", sign, {"version": version, "languages": ["en"]})
    assert signed.status_code == 202, signed.text
    assert signed.json()["signoff"] == 1
    assert ("export", job) in web_context.pipeline.enqueue.sent
    late = bob.call("POST", sign, {"version": version, "languages": ["en", "zh-CN"]})
    assert late.status_code == 409
    assert f"job {job}: already signed by ann at" in late.json()["detail"]
    body = _review(bob, job)
    assert (body["state"], body["signed_by"], body["reviewed_languages"], body["job_state"]) == (
        "signed", "ann", ["en"], "exporting")
    after = bob.call("PATCH", _finding_path(job, reviewed.uids[0]),
                     {"version": body["version"], "decision": "rejected",
                      "reject_reason": "other"})
    assert after.status_code == 409 and "already signed by ann" in after.json()["detail"]


def test_send_back_keeps_the_decisions_and_records_the_note(ann, reviewed):
    job = reviewed.job_id
    ann.call("POST", f"/api/v1/jobs/{job}/review")
    version = ann.call("PATCH", _finding_path(job, reviewed.uids[0]),
                       {"version": 1, **ACCEPTED}).json()["version"]
    answer = ann.call("POST", f"/api/v1/jobs/{job}/review/send-back",
                      {"version": version, "note": "needs the lateral view"})
    assert answer.status_code == 200 and answer.json()["version"] == version + 1
    body = _review(ann, job)
    assert (body["state"], body["claimed_by"], body["sent_back_by"], body["sent_back_note"]) == (
        "open", None, "ann", "needs the lateral view")
    assert body["findings"][0]["decision"] == "accepted"


def test_the_worklist_filters_by_modality_wait_and_priority(ann, reviewed, web_context):
    assert ann.client.get("/api/v1/reviews").json()["total"] == 1
    ann.call("POST", f"/api/v1/jobs/{reviewed.job_id}/review")
    [row] = ann.client.get("/api/v1/reviews?modality=DX").json()["items"]
    assert (row["job_id"], row["modality"], row["priority"], row["claimed_by"],
            row["finding_count"]) == (reviewed.job_id, "DX", "routine", "ann", 3)
    assert reviewed.study_uid not in str(row)  # a short token, not the UID
    assert ann.client.get("/api/v1/reviews?modality=CT").json()["total"] == 0
    assert ann.client.get("/api/v1/reviews?priority=stat").json()["total"] == 0
    assert ann.client.get("/api/v1/reviews?priority=routine").json()["total"] == 1
    assert ann.client.get("/api/v1/reviews?min_wait_minutes=60").json()["total"] == 0
    with web_context.sessions.begin() as session:
        review = session.query(Review).one()
        review.opened_at = utcnow() - timedelta(hours=2)
    assert ann.client.get("/api/v1/reviews?min_wait_minutes=60").json()["total"] == 1
    bad = ann.client.get("/api/v1/reviews?priority=soon")
    assert bad.status_code == 400 and bad.json()["parameter"] == "priority"
    assert ann.client.get("/api/v1/reviews?min_wait_minutes=-1").status_code == 400


def test_class_figures_over_a_period(ann, reviewed):
    job, version = reviewed.job_id, 1
    for uid, change in zip(reviewed.uids, (
        ACCEPTED, {"decision": "rejected", "reject_reason": "wrong_place"}, ACCEPTED,
    ), strict=True):
        version = ann.call("PATCH", _finding_path(job, uid),
                           {"version": version, **change}).json()["version"]
    assert ann.call("POST", f"/api/v1/jobs/{job}/review/sign",
                    {"version": version, "languages": ["en", "zh-CN"]}).status_code == 202
    since = (utcnow() - timedelta(days=1)).isoformat()
    body = ann.client.get("/api/v1/reviews/figures", params={"since": since}).json()
    by_class = {row["class"]: row for row in body["classes"]}
    assert by_class["Effusion"]["rejected"] == 1
    assert by_class["Effusion"]["rejected_by_reason"]["wrong_place"] == 1
    assert by_class["Cardiomegaly"]["acceptance_rate"] == 1.0
    empty = ann.client.get("/api/v1/reviews/figures",
                           params={"since": since, "until": since})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]


def _suggestion(image_uid: str) -> RegionSuggestion:
    return RegionSuggestion(
        label=Text({"en": "Nodule", "zh-CN": "结节"}),
        description=Text({"en": "A nodule.", "zh-CN": "结节。"}),
        region=Region(ImageRef(image_uid, "1.2.840.10008.5.1.4.1.1.1"), Box(30, 30, 60, 60)),
        confidence=0.42,
    )


def test_region_tasks_answer_suggestions_and_refuse_what_they_cannot(
    ann, vera, reviewed, monkeypatch
):
    asked: list[tuple] = []

    def describe(ctx, session, job_id, sop_instance_uid, frame, box):
        asked.append(("describe", job_id, sop_instance_uid, frame, box))
        return [_suggestion(sop_instance_uid)]

    def locate(ctx, session, job_id, query, language):
        asked.append(("locate", job_id, query, language))
        return [_suggestion(reviewed.image_uid)]

    monkeypatch.setattr(assist, "suggest_for_region", describe)
    monkeypatch.setattr(assist, "suggest_locations", locate)
    base = f"/api/v1/jobs/{reviewed.job_id}/review"
    region = {"sop_instance_uid": reviewed.image_uid, "frame": None,
              "box": {"x_min": 25, "y_min": 25, "x_max": 65, "y_max": 70}}
    answer = ann.call("POST", f"{base}/region-to-text", region)
    assert answer.status_code == 200, answer.text
    [suggestion] = answer.json()["suggestions"]
    assert suggestion["label"] == {"en": "Nodule", "zh-CN": "结节"}
    assert suggestion["confidence"] == 0.42
    assert asked[0] == ("describe", reviewed.job_id, reviewed.image_uid, None, Box(25, 25, 65, 70))
    answer = ann.call("POST", f"{base}/text-to-region", {"query": " nodule ", "language": "en"})
    assert answer.json()["suggestions"][0]["region"]["box"]["x_max"] == 60.0
    assert asked[1] == ("locate", reviewed.job_id, "nodule", "en")
    # the suggestion goes into the report as it came
    taken = ann.call("POST", f"{base}/findings", {
        "version": 1, "origin": "suggestion", "label": suggestion["label"],
        "description": suggestion["description"], "region": suggestion["region"],
        "confidence": suggestion["confidence"]})
    assert taken.status_code == 201
    assert _review(ann, reviewed.job_id)["findings"][-1]["origin"] == "suggestion"
    backwards = dict(region, box={"x_min": 65, "y_min": 25, "x_max": 25, "y_max": 70})
    refused = ann.call("POST", f"{base}/region-to-text", backwards)
    assert refused.status_code == 422 and refused.json()["parameter"] == "box"
    assert vera.call("POST", f"{base}/region-to-text", region).status_code == 403


def test_region_tasks_without_a_model_answer_503(ann, reviewed, monkeypatch):
    def no_model(*args, **kwargs):
        raise StepError("model default is not loaded in the web process")

    monkeypatch.setattr(assist, "suggest_locations", no_model)
    answer = ann.call("POST", f"/api/v1/jobs/{reviewed.job_id}/review/text-to-region",
                      {"query": "nodule"})
    assert answer.status_code == 503 and "not loaded" in answer.json()["detail"]


def test_the_viewer_gets_windowed_cached_frames_of_the_reviews_images_only(vera, reviewed):
    base = f"/api/v1/jobs/{reviewed.job_id}/review/images/{reviewed.image_uid}"
    display = vera.client.get(base)
    assert display.status_code == 200
    shown = display.json()
    assert (shown["rows"], shown["columns"], shown["frame_count"]) == (ROWS, COLUMNS, 1)
    assert shown["window_width"] > 0 and "Lung" in shown["presets"]  # a CT image
    picture = vera.client.get(f"{base}/frames/1.png")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.headers["cache-control"] == "private, max-age=86400"
    assert Image.open(io.BytesIO(picture.content)).size == (COLUMNS, ROWS)
    again = vera.client.get(f"{base}/frames/1.png",
                            headers={"If-None-Match": picture.headers["etag"]})
    assert again.status_code == 304
    narrow = vera.client.get(f"{base}/frames/1.png", params={"center": 0, "width": 1})
    wide = vera.client.get(f"{base}/frames/1.png", params={"center": 0, "width": 100000})
    assert narrow.content != wide.content and narrow.headers["etag"] != wide.headers["etag"]
    small = vera.client.get(f"{base}/frames/1.png", params={"size": 64})
    assert max(Image.open(io.BytesIO(small.content)).size) == 64
    half = vera.client.get(f"{base}/frames/1.png", params={"center": 10})
    assert half.status_code == 400 and half.json()["parameter"] == "width"
    assert vera.client.get(f"{base}/frames/2.png").status_code == 404
    other = f"/api/v1/jobs/{reviewed.job_id}/review/images/1.2.3.4.5/frames/1.png"
    assert vera.client.get(other).status_code == 404
    vera.client.cookies.clear()
    assert vera.client.get(f"{base}/frames/1.png").status_code == 401


@pytest.mark.parametrize("path", ["/api/v1/reviews", "/api/v1/jobs/1/review"])
def test_reads_need_credentials(client, path):
    assert client.get(path).status_code == 401

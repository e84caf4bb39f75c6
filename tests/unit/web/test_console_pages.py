"""The console's pages through the real application: login, redirects, tables, the job page,
role-aware actions with CSRF, the job's picture and the live-refresh stamp."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from sqlalchemy import select

from engine.report import Box, Finding, GroundedReport, ImageRef, ModelInfo, Region, Task, Text
from exporters.sc import source_display_pixels
from tests.factories import make_chest_dx, write_dataset
from tests.index_rows import add_artifact, add_delivery, add_job, add_study
from web.accounts import create_account
from web.auth import SESSION_COOKIE
from web.console.login import REFUSED, safe_next
from worklist.accounts_models import Role
from worklist.db import utcnow
from worklist.jobs_models import AuditEvent, Delivery, DeliveryState, Job, JobState
from worklist.models import Instance, RevisionOutcome

PASSWORD = "correct horse battery"


def _account(web_context, name: str, role: Role) -> None:
    with web_context.sessions.begin() as session:
        create_account(session, name, role, password=PASSWORD, actor="test")


def _log_in(client, name: str, password: str = PASSWORD, next_path: str = "/"):
    return client.post("/login", data={"username": name, "password": password, "next": next_path},
                       follow_redirects=False)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


@pytest.fixture
def operator(client, web_context):
    _account(web_context, "olga", Role.OPERATOR)
    assert _log_in(client, "olga").status_code == 303
    return client


@pytest.fixture
def failed_job(web_context):
    """A job that failed in delivery: one delivery done, one failed with the peer's answer."""
    with web_context.sessions.begin() as session:
        study = add_study(session)
        job = add_job(session, study, state=JobState.FAILED, finished_at=utcnow(),
                      last_error="delivery to PACS failed")
        add_delivery(session, job, destination="EHR", protocol="fhir")
        add_delivery(session, job, destination="PACS", state=DeliveryState.FAILED, attempts=3,
                     last_error="association rejected by 127.0.0.1:1: connection refused")
        add_artifact(session, job, kind="sr", path="x/sr-en.dcm")
        return job.id


def test_pages_send_strangers_to_the_login_page_and_back(client, web_context):
    answer = client.get("/jobs?state=failed", follow_redirects=False)
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert location.path == "/login"
    assert parse_qs(location.query) == {"next": ["/jobs?state=failed"]}
    login_page = client.get(answer.headers["location"])
    assert login_page.status_code == 200
    assert 'name="next" value="/jobs?state=failed"' in login_page.text
    _account(web_context, "olga", Role.OPERATOR)
    signed_in = _log_in(client, "olga", next_path="/jobs?state=failed")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/jobs?state=failed"


def test_the_session_cookie_is_httponly_strict_secure_and_scoped(client, web_context):
    _account(web_context, "olga", Role.OPERATOR)
    answer = _log_in(client, "olga")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Secure", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x",
               "evil.example", "/login?next=/x", "/ok\r\nSet-Cookie: x=y"],
)
def test_next_never_leaves_the_application(target):
    assert safe_next(target) == "/"


def test_login_after_a_foreign_next_lands_on_the_dashboard(client, web_context):
    _account(web_context, "olga", Role.OPERATOR)
    answer = _log_in(client, "olga", next_path="//evil.example/")
    assert answer.headers["location"] == "/"


def test_a_refused_login_never_says_why_and_is_audited(client, web_context):
    _account(web_context, "olga", Role.OPERATOR)
    unknown = _log_in(client, "nobody")
    wrong = _log_in(client, "olga", "not the password")
    for answer in (unknown, wrong):
        assert answer.status_code == 401
        assert REFUSED in answer.text
        assert "set-cookie" not in answer.headers
        assert '<form class="login"' in answer.text
    with web_context.sessions() as session:
        failures = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == "login-failed")
        ).all()
    assert failures == ["unknown account", "wrong password (1 in a row)"]


def test_logout_needs_the_csrf_token_and_ends_the_session(operator):
    page = operator.get("/")
    assert page.status_code == 200
    assert operator.post("/logout", follow_redirects=False).status_code == 403
    answer = operator.post("/logout", data={"csrf_token": _csrf(page.text)},
                           follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    operator.cookies.clear()
    assert operator.get("/", follow_redirects=False).status_code == 303


def test_dashboard_counts_and_latest_jobs(operator, web_context, failed_job):
    page = operator.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert re.search(r"<dt>Failed</dt><dd>1</dd>", page.text)
    assert f'href="/jobs/{failed_job}"' in page.text
    assert "<th scope=\"row\">PACS</th>" in page.text  # delivery failures by destination


def test_studies_and_jobs_tables_filter_and_page(operator, web_context, failed_job):
    with web_context.sessions.begin() as session:
        ct = add_study(session, modality="CT", calling_ae_title="WARD")
        add_job(session, ct, route="ct")
        for _ in range(29):
            add_job(session, add_study(session, modality="MR"), route="ct")
        uid = ct.study_instance_uid
    studies = operator.get("/studies", params={"modality": "CT"})
    assert uid in studies.text and studies.text.count("data-study-uid=") == 1
    by_ae = operator.get("/studies", params={"calling_ae": "WARD", "state": "ready"})
    assert by_ae.text.count("data-study-uid=") == 1
    jobs = operator.get("/jobs", params={"route": "ct"})
    assert jobs.text.count("data-job-id=") == 25 and "Next page" in jobs.text
    second = operator.get("/jobs", params={"route": "ct", "offset": "25"})
    assert second.text.count("data-job-id=") == 5
    failed = operator.get("/jobs", params={"state": "failed"})
    assert failed.text.count("data-job-id=") == 1


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [("/studies", {"state": "lost"}, "state"), ("/studies", {"from": "yesterday"}, "from"),
     ("/jobs", {"from": "2026-12-06", "until": "2026-12-01"}, "until"),
     ("/jobs", {"limit": "7"}, "limit")],
)
def test_a_bad_filter_is_shown_at_its_field(operator, path, params, field):
    answer = operator.get(path, params=params)
    assert answer.status_code == 400
    assert f'id="{field}-error"' in answer.text
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', answer.text)


def test_job_page_shows_deliveries_artifacts_and_timeline(operator, failed_job):
    page = operator.get(f"/jobs/{failed_job}")
    assert page.status_code == 200
    assert "connection refused" in page.text  # the peer's answer
    assert f"/api/v1/jobs/{failed_job}/artifacts/" in page.text
    assert "job-created" in page.text
    assert operator.get("/jobs/999999").status_code == 404


def test_a_viewer_sees_no_actions_and_its_forged_post_is_refused(client, web_context, failed_job):
    _account(web_context, "vera", Role.VIEWER)
    _log_in(client, "vera")
    page = client.get(f"/jobs/{failed_job}")
    assert page.status_code == 200
    assert "Retry" not in page.text and "<dialog" not in page.text
    csrf = _csrf(page.text)  # the logout form's: a valid token for this session
    with web_context.sessions() as session:
        delivery = session.scalars(
            select(Delivery.id).where(Delivery.state == DeliveryState.FAILED)
        ).one()
    for path in (f"/deliveries/{delivery}/retry", f"/jobs/{failed_job}/retry"):
        refused = client.post(path, data={"csrf_token": csrf}, follow_redirects=False)
        assert refused.status_code == 403, path
    with web_context.sessions() as session:
        assert session.get(Job, failed_job).state is JobState.FAILED


def test_an_operator_retries_a_failed_delivery_through_the_dialog_form(
    operator, web_context, failed_job
):
    page = operator.get(f"/jobs/{failed_job}")
    with web_context.sessions() as session:
        delivery = session.scalars(
            select(Delivery.id).where(Delivery.state == DeliveryState.FAILED)
        ).one()
    form = re.search(rf'<dialog id="confirm-retry-delivery-{delivery}".*?</dialog>', page.text,
                     re.DOTALL)
    assert form and f'action="/deliveries/{delivery}/retry"' in form.group(0)
    assert operator.post(f"/deliveries/{delivery}/retry",
                         follow_redirects=False).status_code == 403  # no CSRF token
    done = operator.post(f"/deliveries/{delivery}/retry", data={"csrf_token": _csrf(page.text)},
                         follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/jobs/{failed_job}?done=delivery-retry"
    assert ("delivery", delivery) in web_context.pipeline.enqueue.sent
    with web_context.sessions() as session:
        assert session.get(Delivery, delivery).state is DeliveryState.PENDING
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "delivery-retry")
        ).one()
        assert event.actor == "web:olga" and event.source == "testclient"
    after = operator.get(done.headers["location"])
    assert "The delivery starts over." in after.text
    again = operator.post(f"/deliveries/{delivery}/retry", data={"csrf_token": _csrf(page.text)})
    assert again.status_code == 409  # pending now: nothing to retry


def test_cancel_is_offered_for_a_queued_job_only(operator, web_context):
    with web_context.sessions.begin() as session:
        job = add_job(session, add_study(session), state=JobState.QUEUED).id
    page = operator.get(f"/jobs/{job}")
    assert f'action="/jobs/{job}/cancel"' in page.text
    assert f'action="/jobs/{job}/retry"' not in page.text
    answer = operator.post(f"/jobs/{job}/cancel", data={"csrf_token": _csrf(page.text)},
                           follow_redirects=False)
    assert answer.status_code == 303
    with web_context.sessions() as session:
        assert session.get(Job, job).state is JobState.CANCELLED


def test_live_stamp_moves_when_a_job_does(operator, web_context, failed_job):
    first = operator.get("/live").json()
    assert operator.get("/live").json() == first
    with web_context.sessions.begin() as session:
        add_job(session, add_study(session, outcome=RevisionOutcome.JOB), state=JobState.QUEUED)
    second = operator.get("/live").json()
    assert second["stamp"] != first["stamp"]
    assert second["running"] == first["running"] + 1
    operator.cookies.clear()
    assert operator.get("/live").status_code == 401


def _picture_job(web_context, shared_data: Path) -> tuple[int, Path, Box]:
    """A job whose report has one box on a real chest radiograph in the storage folder."""
    source = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / "00000072_000.png")
    with web_context.sessions.begin() as session:
        study = add_study(session, study_instance_uid=str(source.StudyInstanceUID))
        instance = session.scalars(
            select(Instance).where(Instance.series_pk == study.series[0].id)
        ).one()
        instance.sop_instance_uid = str(source.SOPInstanceUID)
        write_dataset(source, web_context.pipeline.storage_root / instance.path)
        box = Box(100, 120, 260, 300)
        report = GroundedReport(
            study_instance_uid=str(source.StudyInstanceUID),
            findings=(Finding(
                kind="abnormality", label=Text({"en": "nodule", "zh-CN": "结节"}),
                description=Text({"en": "Nodule.", "zh-CN": "结节。"}),
                regions=(Region(ImageRef(str(source.SOPInstanceUID), str(source.SOPClassUID)),
                                box),),
                tracking_uid="1.2.3.4", confidence=0.8,
            ),),
            impression=Text({"en": "Nodule.", "zh-CN": "结节。"}),
            model=ModelInfo("test", "1", "RadGround", "1.2.3"),
            task=Task.DETECTION, raw_output="",
        )
        job = add_job(session, study)
        job.report_json = report.to_json()
        return job.id, web_context.pipeline.storage_root / instance.path, box


def test_the_job_picture_draws_the_boxes_on_the_source(operator, web_context, shared_data):
    import io

    job, path, box = _picture_job(web_context, shared_data)
    page = operator.get(f"/jobs/{job}")
    assert f'src="/jobs/{job}/images/0.png"' in page.text
    assert "结节" in page.text and "nodule" in page.text
    answer = operator.get(f"/jobs/{job}/images/0.png")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")).astype(int)
    plain = source_display_pixels(dcmread(path))
    assert drawn.shape[:2] == plain.shape
    grey = np.stack([plain] * 3, axis=-1).astype(int)
    edge = drawn[int(box.y_min) + 40, int(box.x_min)]  # on the box's left edge
    assert abs(edge - grey[int(box.y_min) + 40, int(box.x_min)]).sum() > 60
    assert (drawn[500:, 400:] == grey[500:, 400:]).all()  # far from the box: the source
    assert operator.get(f"/jobs/{job}/images/1.png").status_code == 404
    operator.cookies.clear()
    assert operator.get(f"/jobs/{job}/images/0.png").status_code == 401


def test_static_files_are_served_by_the_application(client):
    assert "text/css" in client.get("/static/console/console.css").headers["content-type"]
    assert "javascript" in client.get("/static/console/console.js").headers["content-type"]


def test_sessions_expire_while_the_page_is_open(operator, web_context):
    from dataclasses import replace

    app_context = operator.app.state.context
    operator.app.state.context = replace(
        app_context, login_policy=replace(app_context.login_policy, session_idle=timedelta(0))
    )
    assert operator.get("/jobs", follow_redirects=False).status_code == 303


def test_under_a_base_path_links_cookies_and_redirects_carry_it(web_context):
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from web.app import create_app

    app = create_app(replace(web_context, base_path="/radground"))
    _account(web_context, "olga", Role.OPERATOR)
    with TestClient(app, base_url="https://testserver") as client:
        answer = client.get("/radground/jobs", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/radground/login?next=%2Fjobs"
        signed_in = client.post("/radground/login", follow_redirects=False, data={
            "username": "olga", "password": PASSWORD, "next": "/jobs"})
        assert signed_in.headers["location"] == "/radground/jobs"
        assert "path=/radground" in signed_in.headers["set-cookie"].lower()
        page = client.get("/radground/jobs")
        assert page.status_code == 200
        assert 'href="/radground/static/console/console.css"' in page.text
        assert 'data-live-url="/radground/live"' in page.text
        assert client.get("/radground/static/console/console.js").status_code == 200


def test_an_operator_reprocesses_a_study_from_the_studies_table(operator, web_context):
    with web_context.sessions.begin() as session:
        uid = add_study(session, modality="CT", outcome=RevisionOutcome.NO_ROUTE,
                        outcome_detail="modality").study_instance_uid
    page = operator.get("/studies")
    assert "skipped: no route (modality)" in page.text
    assert f'action="/studies/{uid}/reprocess"' in page.text
    answer = operator.post(f"/studies/{uid}/reprocess", data={"csrf_token": _csrf(page.text)},
                           follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/jobs?study={uid}&done=reprocess"
    after = operator.get(answer.headers["location"])
    assert "The study will be processed again as a new revision." in after.text
    assert uid in after.text  # the jobs table is narrowed to the study
    with web_context.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "reprocess")).one()
        assert event.actor == "web:olga" and event.source == "testclient"
    unknown = operator.post("/studies/1.2.3.999/reprocess", data={"csrf_token": _csrf(page.text)})
    assert unknown.status_code == 404


def test_a_locked_account_gets_the_same_answer_as_a_wrong_password(client, web_context):
    _account(web_context, "olga", Role.OPERATOR)
    answers = [_log_in(client, "olga", "not the password") for _ in range(5)]
    locked = _log_in(client, "olga")  # the right password, after five wrong ones
    for answer in (*answers, locked):
        assert answer.status_code == 401 and REFUSED in answer.text
    assert answers[0].text.replace("olga", "") == locked.text.replace("olga", "")
    with web_context.sessions() as session:
        details = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == "login-failed")
        ).all()
    assert details[-1] == "account locked"

"""The review page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright),
against `radground serve` as an operator starts it: node, workers and web process.

A chest radiograph sent by dcmtk's storescu is processed; a radiologist opens its review from the
job's page, asks the model what is in a drawn box and adds its answer to the report, moves one
finding's box by dragging it, accepts it, rejects another with a reason, edits a third one's
sentence in both languages, accepts the rest and signs in both languages. A second radiologist who
had the page open and signs a moment later is told who signed; a viewer sees the page read-only
and a forged sign-off from their session is refused. Screenshots of the review page before and
after sign-off go to ``docs/images/review-before.png`` / ``review-after.png`` and
``$RADGROUND_TEST_ARTIFACTS/console`` (default ``tests/artifacts/console``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from pydicom import dcmread
from sqlalchemy import select

from tests.factories import make_chest_dx, write_dataset
from tests.integration.dcmtk import echoscu, storescu
from tests.integration.radground_processes import (
    REPO,
    RadGroundProcess,
    free_port,
    wait_until,
    write_config,
)
from tests.integration.test_console_browser import (
    CHROMIUM,
    PASSWORD,
    TURNAROUND_MS,
    _artifacts,
    _log_in,
    _node_port,
    _radground,
    _status,
)
from tests.integration.test_pipeline import CXR
from worklist.db import create_db_engine, make_session_factory
from worklist.jobs_models import Artifact, AuditEvent, Job, JobState
from worklist.review_models import FindingDecision, Review, ReviewFinding, ReviewState

DOCS_IMAGES = REPO / "docs" / "images"
VIEWPORT = {"width": 1440, "height": 1000}


@pytest.fixture
def node(tmp_path: Path):
    """`radground serve` with the chest route holding its outputs for review (``before_ehr``, no
    destination); two radiologists and a viewer."""
    web_port = free_port()
    config = write_config(
        tmp_path / "radground.toml", workdir=tmp_path, port=free_port(),
        database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        pacs_port=None, fhir_url=None, route_destinations=(),
        extra_toml=f"[web]\nport = {web_port}\n",
    )
    config.write_text(config.read_text().replace(
        "destinations = []\n", 'destinations = []\nreview = "before_ehr"\n', 1))
    for name, role, full_name in (("rita", "radiologist", "Rita Example"),
                                  ("rob", "radiologist", "Rob Example"),
                                  ("vera", "viewer", "")):
        _radground(config, "users", "add", name, "--role", role, "--full-name", full_name,
                   "--organisation", "General Hospital", "--password-stdin",
                   input=PASSWORD + "\n")
    serve = RadGroundProcess(config, ["serve"], tmp_path / "logs" / "serve.log")
    base = f"http://127.0.0.1:{web_port}"
    engine = create_db_engine(f"sqlite:///{tmp_path / 'radground.db'}")
    try:
        wait_until(lambda: _status(f"{base}/login") == 200, 120, what="the console answering",
                   logs=[serve])
        wait_until(lambda: echoscu(_node_port(config)).returncode == 0, 60,
                   what="the node answering C-ECHO", logs=[serve])
        yield base, config, tmp_path, make_session_factory(engine), serve
    finally:
        serve.stop()
        engine.dispose()


def _job_in(sessions, *states: JobState) -> int | None:
    with sessions() as session:
        job = session.scalars(select(Job)).first()
        if job is not None and job.state in states:
            return job.id
    return None


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for step in range(1, 9):
        page.mouse.move(start[0] + (end[0] - start[0]) * step / 8,
                        start[1] + (end[1] - start[1]) * step / 8)
    page.mouse.up()


def _wait_message(page, text: str) -> None:
    page.locator("#review-message", has_text=text).wait_for(timeout=60_000)


def _screenshot(page, folder: Path, name: str) -> None:
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, DOCS_IMAGES / name)


def test_review_and_sign_in_a_real_browser(node, shared_data: Path):
    base, config, workdir, sessions, serve = node
    folder = _artifacts()
    source = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / CXR)
    sent = write_dataset(source, workdir / "sources" / "cxr.dcm")
    assert storescu(_node_port(config), [sent]).responses == ["Success"]
    wait_until(lambda: _job_in(sessions, JobState.AWAITING_REVIEW) is not None,
               TURNAROUND_MS / 1000, what="the job awaiting review", logs=[serve])
    job_id = _job_in(sessions, JobState.AWAITING_REVIEW)
    review_url = f"{base}/jobs/{job_id}/review"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            rita = browser.new_context(viewport=VIEWPORT).new_page()
            _log_in(rita, base, "rita")
            rita.get_by_role("link", name="Review", exact=True).click()  # the menu
            rita.wait_for_url(f"{base}/reviews")
            waiting = rita.locator(f'tr[data-review-job="{job_id}"]')
            assert "chest-radiographs" in waiting.inner_text()
            rita.screenshot(path=str(folder / "review-worklist.png"), full_page=True)
            waiting.get_by_role("link", name=f"Review job {job_id}").click()
            rita.wait_for_url(review_url)
            image = rita.locator("#review-image")
            wait_until(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"), 30,
                       what="the review image loaded")
            cards = rita.locator(".finding-card")
            model_findings = cards.count()
            assert model_findings >= 1, "the sample radiograph has findings"
            assert rita.locator("g.finding-box").count() >= 1

            # zoom with the buttons and the keyboard, then fit again
            rita.get_by_role("button", name="Zoom in").click()
            assert rita.locator("#zoom-level").inner_text() != "100%"
            rita.locator("#viewport").focus()
            rita.keyboard.press("0")

            # a second radiologist opens the page too
            rob = browser.new_context(viewport=VIEWPORT).new_page()
            _log_in(rob, base, "rob")
            rob.goto(f"{base}/reviews")
            assert rob.locator(f'tr[data-review-job="{job_id}"] td').last.inner_text() == "rita"
            rob.goto(f"{base}/jobs/{job_id}")  # the job's page links to its review
            rob.locator('a.button[href$="/review"]').click()
            rob.wait_for_url(review_url)
            rob.get_by_text("has this review open too").wait_for()

            # finding 1 (the model's): move its box by dragging it, edit its sentence in both
            # languages, accept it
            box = rita.locator('g.finding-box[data-number="1"] rect.box').bounding_box()
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            _drag(rita, centre, (centre[0] - 12, centre[1] + 10))
            _wait_message(rita, "Finding 1: box moved")
            cards.nth(0).get_by_role("button", name="Edit…").click()
            edit = rita.get_by_role("dialog", name="Edit finding 1")
            edit.get_by_label("Sentence (en)").fill(
                "Enlarged cardiac silhouette; cardiothoracic ratio about 0.6.")
            edit.get_by_label("Sentence (zh-CN)").fill("心影增大，心胸比约0.6。")
            edit.get_by_role("button", name="Save changes").click()
            _wait_message(rita, "Finding 1: sentence (en, zh-CN) changed")
            assert "心影增大，心胸比约0.6。" in cards.nth(0).inner_text()
            assert cards.nth(0).locator(".edited").count() == 2
            cards.nth(0).get_by_role("button", name="Accept").click()
            _wait_message(rita, "Finding 1 accepted")

            shown = rita.locator("#review-image").bounding_box()

            def at(x: float, y: float) -> tuple[float, float]:  # a point of the image
                return shown["x"] + shown["width"] * x, shown["y"] + shown["height"] * y

            # "What is here?": draw a box inside finding 1's, add the model's answer to the report
            inner = rita.locator('g.finding-box[data-number="1"] rect.box').bounding_box()
            rita.get_by_label("What is here?").check()
            _drag(rita, (inner["x"] + inner["width"] * 0.1, inner["y"] + inner["height"] * 0.1),
                  (inner["x"] + inner["width"] * 0.9, inner["y"] + inner["height"] * 0.9))
            suggestion = rita.locator("#suggestions .suggestion").first
            suggestion.wait_for(timeout=120_000)  # the web process loads the model once
            suggestion.get_by_role("button", name=re.compile(r"^Add .+ to the report$")).click()
            _wait_message(rita, "Added to the report")
            assert cards.count() == model_findings + 1
            assert cards.nth(model_findings).get_by_text("Model suggestion, added").count() == 1
            if cards.count() < 3:  # draw a finding of one's own too
                rita.get_by_label("Draw a finding").check()
                shown = rita.locator("#review-image").bounding_box()
                _drag(rita, at(0.76, 0.27), at(0.88, 0.35))
                dialog = rita.get_by_role("dialog", name="Add a finding")
                dialog.get_by_label("Finding (en)").fill("Rib fracture")
                dialog.get_by_label("Sentence (en)").fill("Healed fracture of a left rib.")
                dialog.get_by_label("Finding (zh-CN)").fill("肋骨骨折")
                dialog.get_by_label("Sentence (zh-CN)").fill("左侧肋骨陈旧性骨折，已愈合。")
                dialog.get_by_role("button", name="Add finding").click()
                _wait_message(rita, "Finding added")
            assert cards.count() >= 3
            rita.get_by_label("Move boxes").check()

            # the model's suggestion: reject it, with a reason from the short list and a note
            rejected = model_findings + 1
            cards.nth(model_findings).get_by_role("button", name="Reject…").click()
            reject = rita.get_by_role("dialog", name=f"Reject finding {rejected}")
            reject.get_by_label("Duplicate").check()
            reject.get_by_label("Note (optional)").fill("same as finding 1")
            reject.get_by_role("button", name="Reject finding").click()
            _wait_message(rita, f"Finding {rejected} rejected")

            # the rest: accept
            for index in range(cards.count()):
                card = cards.nth(index)
                if "pending" in card.locator(".badge.decision").inner_text():
                    card.get_by_role("button", name="Accept").click()
                    _wait_message(rita, f"Finding {index + 1} accepted")
            assert rita.locator(".finding-card.decision-pending").count() == 0
            # "Where is …?": the model's box for a named finding, drawn dashed, to add or not
            rita.get_by_label("Where is …?").fill("cardiomegaly")
            rita.get_by_role("button", name="Find it").click()
            rita.locator("#suggestions h3", has_text="Where the model finds").wait_for()
            assert rita.locator("#suggestions .suggestion").count() >= 1
            assert rita.locator("#overlay rect.suggestion-box").count() >= 1

            rita.get_by_label("English").check()
            rita.get_by_label("中文 (Chinese)").check()
            _screenshot(rita, folder, "review-before.png")

            # rob reloads (he sees rita's decisions), gets ready to sign; rita signs first
            rob.reload()
            rob.get_by_label("English").check()
            rita.get_by_role("button", name="Sign report").click()
            _wait_message(rita, "Signed (sign-off")
            rita.get_by_text("This page is read-only").wait_for()
            rob.get_by_role("button", name="Sign report").click()
            rob.locator("#review-message", has_text="already signed by rita").wait_for()
            rob.get_by_text("This page is read-only").wait_for()  # refreshed: signed, read-only
            assert rob.get_by_role("button", name="Sign report").count() == 0
            _screenshot(rita, folder, "review-after.png")

            # a viewer: read-only page, and a forged sign-off is refused
            vera = browser.new_context(viewport=VIEWPORT).new_page()
            _log_in(vera, base, "vera")
            vera.goto(review_url)
            vera.locator(".finding-card").first.wait_for()
            assert vera.get_by_role("button", name="Accept").count() == 0
            assert vera.get_by_role("button", name="Sign report").count() == 0
            forged = vera.evaluate(
                """async ([url, token]) => (await fetch(url, {method: "POST",
                     headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
                     body: JSON.stringify({version: 99, languages: ["en"]}),
                     credentials: "same-origin"})).status""",
                [f"{base}/api/v1/jobs/{job_id}/review/sign",
                 vera.locator('input[name="csrf_token"]').first.input_value()],
            )
            assert forged == 403
        except BaseException:
            for context in browser.contexts:
                for number, page in enumerate(context.pages):
                    page.screenshot(path=str(folder / f"review-failed-{number}.png"),
                                    full_page=True)
            print(f"=== radground serve\n{serve.tail(150)}")
            raise
        finally:
            browser.close()

    # the sign-off's set: a VERIFIED SR per reviewed language with the radiologist's sentences
    wait_until(lambda: _job_in(sessions, JobState.DONE, JobState.FAILED) == job_id, 120,
               what="the signed set exported", logs=[serve])
    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.DONE, job.last_error
        signed_srs = {
            a.language: workdir / "outputs" / a.path
            for a in session.scalars(select(Artifact).where(
                Artifact.job_id == job_id, Artifact.artifact_set == 1, Artifact.kind == "sr"))
        }
    assert sorted(signed_srs) == ["en", "zh-CN"]
    for language, sentence in (
        ("en", "Enlarged cardiac silhouette; cardiothoracic ratio about 0.6."),
        ("zh-CN", "心影增大，心胸比约0.6。"),
    ):
        sr = dcmread(signed_srs[language])
        assert (sr.VerificationFlag, sr.CompletionFlag) == ("VERIFIED", "COMPLETE")
        assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "Example^Rita"
        assert sentence.encode() in signed_srs[language].read_bytes()  # ISO_IR 192: UTF-8
    with sessions() as session:
        actions = [e.action for e in session.scalars(
            select(AuditEvent).where(AuditEvent.job_id == job_id).order_by(AuditEvent.id))]
        assert actions.count("review-signed") == 1
        assert actions.index("review-signed") < len(actions) - 1  # the export came after it
        review = session.scalars(select(Review).where(Review.job_id == job_id)).one()
        assert (review.state, review.signed_by, review.reviewed_languages) == (
            ReviewState.SIGNED, "rita", "en,zh-CN")
        rows = session.scalars(select(ReviewFinding).where(ReviewFinding.review_id == review.id)
                               .order_by(ReviewFinding.position)).all()
        first = rows[0]
        suggested = next(r for r in rows if r.origin.value == "suggestion")
        assert (first.decision, first.decided_by, first.box_moved) == (
            FindingDecision.ACCEPTED, "rita", True)
        assert first.edited_languages == "en,zh-CN" and 0 < first.box_iou < 1
        assert (suggested.decision, suggested.reject_reason.value, suggested.reject_note) == (
            FindingDecision.REJECTED, "duplicate", "same as finding 1")

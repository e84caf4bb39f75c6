"""The operator console in a real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright), against `radground serve` as an operator starts it: node, workers and web process.

A chest radiograph sent by dcmtk's storescu appears on the dashboard and its job finishes without
the page being reloaded; the job's picture shows the findings' boxes; a delivery to a PACS that is
down (a closed port, retries given up after seconds) is retried from its page through the
confirmation dialog, by keyboard, and is attempted again; logging out ends the session; a viewer
sees no action and its forged POST is refused. Screenshots of the dashboard and the job page go
to ``$RADGROUND_TEST_ARTIFACTS`` (default ``tests/artifacts/``, git-ignored).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright
from pydicom import dcmread
from sqlalchemy import select

from engine.report import GroundedReport
from exporters.sc import source_display_pixels
from tests.factories import make_chest_dx, write_dataset
from tests.integration.dcmtk import echoscu, storescu
from tests.integration.radground_processes import (
    REPO,
    RadGroundProcess,
    clean_env,
    free_port,
    wait_until,
    write_config,
)
from tests.integration.test_pipeline import CXR
from worklist.db import create_db_engine, make_session_factory
from worklist.jobs_models import AuditEvent, Delivery, Job

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "correct horse battery"
#: Seconds from storescu to the job's end (completion 2 s, worker start-up, CPU inference).
TURNAROUND_MS = 150_000


def _artifacts() -> Path:
    folder = Path(os.environ.get("RADGROUND_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
    folder = folder / "console"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots in {folder}")
    return folder


def _radground(config: Path, *args: str, input: str | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "radground", "--config", str(config), *args], input=input,
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=REPO, check=False,
    )
    assert done.returncode == 0, done.stderr


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5, follow_redirects=False).status_code
    except httpx.HTTPError:
        return None


@pytest.fixture
def node(tmp_path: Path):
    """`radground serve` with a chest route delivering to a PACS that is down; its URL."""
    web_port, pacs_port = free_port(), free_port()  # nothing listens on pacs_port
    config = write_config(
        tmp_path / "radground.toml", workdir=tmp_path, port=free_port(),
        database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        pacs_port=pacs_port, fhir_url=None, route_destinations=("PACS",),
        # a failing delivery gives up after about 2 s (retry_for_hours > 0 is all the settings ask)
        extra_toml=f"[web]\nport = {web_port}\n"
        "[delivery]\nretry_for_hours = 0.0005\nbackoff_base_seconds = 0.3\n"
        "backoff_cap_seconds = 0.6\n",
    )
    for name, role in (("olga", "operator"), ("vera", "viewer")):
        _radground(config, "users", "add", name, "--role", role, "--password-stdin",
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


def _node_port(config: Path) -> int:
    return int(re.search(r"\[node\]\nport = (\d+)", config.read_text()).group(1))


def _log_in(page, base: str, name: str) -> None:
    """Log in by keyboard only: the name field has focus, Tab to the password, Enter."""
    page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")
    page.get_by_label("Name").wait_for()
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


def _picture_differs_where_the_boxes_are(png: bytes, source: Path, report: GroundedReport) -> None:
    drawn = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    grey = np.stack([source_display_pixels(dcmread(source))] * 3, axis=-1).astype(int)
    assert drawn.shape == grey.shape
    boxes = [region.box for finding in report.findings for region in finding.regions]
    assert boxes, "the sample radiograph has located findings"
    for box in boxes:
        row = int((box.y_min + box.y_max) / 2)
        left = drawn[row, int(box.x_min)] - grey[row, int(box.x_min)]
        assert abs(left).sum() > 60, f"no box edge drawn at {box}"
    assert (drawn != grey).any(axis=2).mean() < 0.2  # the rest is the source image


def test_console_in_a_real_browser(node, shared_data: Path):
    base, config, workdir, sessions, serve = node
    folder = _artifacts()
    source = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / CXR)
    sent = write_dataset(source, workdir / "sources" / "cxr.dcm")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            _log_in(page, base, "olga")
            page.keyboard.press("Tab")  # the first stop on every page: the skip link
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"
            assert page.locator("tr[data-job-id]").count() == 0
            page.evaluate("window.loadedOnce = true")  # gone if the page reloads

            # a study sent by storescu appears and its job finishes, without a reload
            assert storescu(_node_port(config), [sent]).responses == ["Success"]
            row = page.locator("tr[data-job-id]").first
            row.wait_for(timeout=TURNAROUND_MS)
            row.locator(".state-failed").wait_for(timeout=TURNAROUND_MS)  # the PACS is down
            assert page.evaluate("window.loadedOnce") is True
            job_id = int(row.get_attribute("data-job-id"))
            page.evaluate("document.activeElement.blur()")
            page.screenshot(path=str(folder / "dashboard.png"), full_page=True)

            # the job's page: findings, the picture with boxes, the delivery that failed
            row.get_by_role("link", name=f"Job {job_id}").click()
            page.wait_for_url(f"{base}/jobs/{job_id}")
            picture = page.get_by_role("img", name=re.compile("finding"))
            picture.wait_for()
            # polled from here: the pages' Content-Security-Policy forbids wait_for_function's eval
            wait_until(lambda: picture.evaluate("img => img.complete && img.naturalWidth > 0"), 30,
                       what="the job's picture loaded")
            png = page.request.get(f"{base}/jobs/{job_id}/images/0.png")
            assert png.ok and png.headers["content-type"] == "image/png"
            with sessions() as session:
                job = session.get(Job, job_id)
                report = GroundedReport.from_json(job.report_json)
                [delivery] = session.scalars(select(Delivery).where(Delivery.job_id == job_id))
                assert delivery.state.value == "failed" and "gave up" in delivery.last_error
            _picture_differs_where_the_boxes_are(png.body(), sent, report)
            pacs = page.locator('tr[data-delivery="PACS"]')
            assert "gave up after" in pacs.inner_text()
            assert page.locator(".timeline li", has_text="delivery-failed").count() == 1

            # retry the delivery by keyboard: the dialog opens, Escape closes it, Enter confirms
            retry = pacs.get_by_role("button", name="Retry delivery to PACS…")
            retry.focus()
            page.keyboard.press("Enter")
            dialog = page.get_by_role("dialog", name="Retry delivery to PACS")
            dialog.wait_for()
            assert page.evaluate("document.activeElement.textContent") == "Cancel"
            page.keyboard.press("Escape")
            dialog.wait_for(state="hidden")
            assert page.evaluate("document.activeElement.textContent").startswith("Retry delivery")
            page.keyboard.press("Enter")
            dialog.wait_for()
            page.keyboard.press("Tab")  # Cancel → Retry delivery
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/jobs/{job_id}?done=delivery-retry")
            page.get_by_role("status").filter(has_text="The delivery starts over.").wait_for()
            page.evaluate("window.loadedOnce = true")
            # attempted again, failed again: the page shows it by itself
            page.locator(".timeline li", has_text="delivery-failed").nth(1).wait_for(
                timeout=60_000)
            page.locator('tr[data-delivery="PACS"] .state-failed').wait_for()
            assert page.evaluate("window.loadedOnce") is True
            # nothing runs for this job any more: its page stops polling
            polls: list[str] = []
            page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/live") else None)
            page.wait_for_timeout(6000)
            assert polls == []
            with sessions() as session:
                retried = session.scalars(select(AuditEvent).where(
                    AuditEvent.job_id == job_id, AuditEvent.actor == "web:olga")).all()
            assert [e.action for e in retried] == ["delivery-retry"]
            assert retried[0].source == "127.0.0.1"
            page.screenshot(path=str(folder / "job.png"), full_page=True)

            # the tables find the study and the job by their filters
            page.goto(f"{base}/studies?modality=DX&calling_ae=STORESCU")
            assert page.locator("tr[data-study-uid]").count() == 1
            page.screenshot(path=str(folder / "studies.png"), full_page=True)
            page.goto(f"{base}/jobs?state=failed&route=chest-radiographs")
            assert page.locator("tr[data-job-id]").count() == 1
            page.screenshot(path=str(folder / "jobs.png"), full_page=True)

            # log out: the session ends
            page.get_by_role("button", name="Log out").click()
            page.wait_for_url(f"{base}/login")
            page.goto(f"{base}/jobs/{job_id}")
            assert page.url == f"{base}/login?next=%2Fjobs%2F{job_id}"
            context.close()

            # a viewer sees no action, and its forged POST is refused
            viewer = browser.new_context(viewport={"width": 1280, "height": 900})
            page = viewer.new_page()
            _log_in(page, base, "vera")
            page.goto(f"{base}/jobs/{job_id}")
            page.get_by_role("heading", name=f"Job {job_id}").wait_for()
            actions = page.get_by_role("button", name=re.compile("Retry|Cancel|Reprocess"))
            assert actions.count() == 0
            forged = page.evaluate(
                """async ([url, token]) => (await fetch(url, {method: "POST",
                     body: new URLSearchParams({csrf_token: token}), credentials: "same-origin"}
                   )).status""",
                [f"{base}/deliveries/{delivery.id}/retry",
                 page.locator('input[name="csrf_token"]').first.input_value()],
            )
            assert forged == 403
            viewer.close()
        except BaseException:
            print(f"=== radground serve\n{serve.tail(150)}")
            raise
        finally:
            browser.close()
    with sessions() as session:
        assert session.get(Delivery, delivery.id).state.value == "failed"

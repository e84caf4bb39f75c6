"""Data at rest and in the logs, after a real study through real processes.

`radground serve` (embedded: SQLite index, SQLite broker, the shipped CPU model) is started
with a permissive umask (0002) and DEBUG logging; dcmtk's storescu sends it a chest
radiograph with a distinctive patient; the workers deliver to a real dcmtk storescp (the
PACS), to an HTTPS FHIR endpoint that wants a bearer token read from a file, and over MLLP
to hl7apy's listener (the RIS). Then:

* every file under ``var/`` (instances, outputs, the index and broker databases and their
  companions) is ``0600`` and every folder ``0700``;
* no line any process wrote (node, listener, workers, web; every level) names the patient, their
  ID, birth date, accession number or the study's UIDs in clear, nor the bearer token; the
  UIDs appear only as :func:`dicom_node.uids.short_uid` hashes;
* ``radground jobs show`` does not show the token.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_node.uids import short_uid
from tests.factories import make_chest_dx, write_dataset
from tests.integration.dcmtk import echoscu, require, storescu
from tests.integration.fhir_server import FhirTestServer
from tests.integration.radground_processes import (
    REPO,
    JobReader,
    RadGroundProcess,
    clean_env,
    free_port,
    wait_until,
    write_config,
)
from tests.integration.test_every_destination import answer_aa
from tests.integration.test_mllp_listener import mllp_listener
from tests.integration.test_pipeline import CXR

TOKEN = "rg-test-token-5b9f0e7d41c2"
PATIENT = {
    "PatientName": "Quillfeather^Ottoline^Maud",
    "PatientID": "PID-73310-XQ",
    "PatientBirthDate": "19510417",
    "AccessionNumber": "ACC88412Z",
}
TURNAROUND = 150


@dataclass(frozen=True)
class ServedStudy:
    var: Path
    pacs_dir: Path
    log: str
    jobs_show: str
    uids: dict[str, str]
    job_state: str


def _instances(shared_data: Path, folder: Path) -> tuple[list[Path], dict[str, str]]:
    study, series = generate_uid(), generate_uid()
    paths = []
    for number in (1, 2):
        ds = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / CXR,
                           study_instance_uid=study)
        ds.SeriesInstanceUID, ds.InstanceNumber = series, number
        for keyword, value in PATIENT.items():
            setattr(ds, keyword, value)
        paths.append(write_dataset(ds, folder / f"{number}.dcm"))
    first = dcmread(paths[0], stop_before_pixels=True)
    second = dcmread(paths[1], stop_before_pixels=True)
    uids = {
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": str(first.SOPInstanceUID),
        "SOPInstanceUID 2": str(second.SOPInstanceUID),
        "FrameOfReferenceUID": str(first.get("FrameOfReferenceUID", "")),
    }
    return paths, {key: value for key, value in uids.items() if value}


@pytest.fixture(scope="module")
def served_study(tmp_path_factory, shared_data) -> ServedStudy:
    workdir = tmp_path_factory.mktemp("privilege")
    var = workdir / "var"
    pacs_dir = workdir / "pacs"
    pacs_dir.mkdir()
    secrets = workdir / "secrets"
    secrets.mkdir(mode=0o700)
    token_file = secrets / "ehr-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    files, uids = _instances(shared_data, workdir / "sources")

    pacs_port, port, web_port = free_port(), free_port(), free_port()
    pacs = subprocess.Popen(
        [require("storescp"), "-aet", "PACS", "-od", str(pacs_dir), str(pacs_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    process = None
    database_url = f"sqlite:///{var / 'radground.db'}"
    try:
        with contextlib.ExitStack() as peers:
            ehr = peers.enter_context(FhirTestServer(tls=True))
            ehr.require_auth(bearer=TOKEN)
            ris_port, ris = peers.enter_context(mllp_listener(answer_aa))
            config = write_config(
                workdir / "radground.toml",
                workdir=var,
                port=port,
                database_url=database_url,
                broker_url=f"radground+sqlite:///{var / 'broker.sqlite'}",
                pacs_port=None,
                fhir_url=None,
                route_destinations=("PACS", "EHR", "RIS"),
                extra_toml=(
                    f'[destinations.PACS]\nae_title = "PACS"\nhost = "127.0.0.1"\n'
                    f"port = {pacs_port}\n"
                    f'[destinations.EHR]\ntype = "fhir"\nurl = "{ehr.base_url}"\n'
                    f'auth = "bearer"\ntoken_file = "{token_file}"\n'
                    f'ca_bundle = "{ehr.ca_file}"\n'
                    'patient_identifier_system = "urn:oid:2.25.1234"\n'
                    f'[destinations.RIS]\ntype = "hl7"\nhost = "127.0.0.1"\nport = {ris_port}\n'
                    '[logging]\nlevel = "DEBUG"\n'
                    f'[web]\nport = {web_port}\nstate_dir = "{var / "web"}"\n'
                ),
            )
            caller_umask = os.umask(0o002)  # a permissive caller: the node must not rely on it
            try:
                process = RadGroundProcess(config, ["serve"], workdir / "logs" / "serve.log")
            finally:
                os.umask(caller_umask)
            wait_until(lambda: echoscu(port).returncode == 0 or not process.alive, 90,
                       what="the node answering C-ECHO", logs=[process])
            assert process.alive, process.tail()
            sent = storescu(port, files)
            assert sent.responses == ["Success", "Success"], sent.output
            reader = JobReader(database_url)
            try:
                jobs = wait_until(
                    lambda: [
                        j for j in reader.jobs_of_study(uids["StudyInstanceUID"])
                        if j.state in ("done", "failed")
                    ],
                    TURNAROUND, what="the study's job finished", logs=[process],
                )
            finally:
                reader.close()
            (job,) = jobs
            shown = subprocess.run(
                [sys.executable, "-m", "radground", "--config", str(config), "jobs", "show",
                 str(job.id)],
                capture_output=True, text=True, timeout=60, env=clean_env(), cwd=REPO,
                check=False,
            )
            assert shown.returncode == 0, shown.stderr
            assert ehr.transactions, "the EHR got no transaction"
            # the web process's access log sees a request naming the study and the patient
            asked = httpx.get(
                f"http://127.0.0.1:{web_port}/api/studies/{uids['StudyInstanceUID']}",
                params={"PatientName": PATIENT["PatientName"]}, timeout=30,
            )
            assert asked.status_code in (401, 404), asked.text
            assert ris.received, "the RIS got no message"
    finally:
        if process is not None:
            process.stop()
        pacs.terminate()
        pacs.wait(10)
    return ServedStudy(var=var, pacs_dir=pacs_dir, log=process.log_text(),
                       jobs_show=shown.stdout + shown.stderr, uids=uids,
                       job_state=job.state)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_study_went_through_and_was_delivered(served_study):
    assert served_study.job_state == "done", served_study.jobs_show
    for destination in ("PACS (dicom)", "EHR (fhir)", "RIS (hl7)"):
        assert f"delivery to {destination}: done" in served_study.jobs_show, served_study.jobs_show
    assert any(served_study.pacs_dir.iterdir()), "storescp received nothing"


def test_every_file_under_var_is_0600_and_every_folder_0700(served_study):
    var = served_study.var
    study = served_study.uids["StudyInstanceUID"]
    series = served_study.uids["SeriesInstanceUID"]
    expected = [
        var / "radground.db",
        var / "broker.sqlite",
        var / "instances",
        var / "instances" / ".incoming",
        var / "instances" / study / series / f"{served_study.uids['SOPInstanceUID']}.dcm",
        var / "outputs" / study,
    ]
    for path in expected:
        assert path.exists(), f"{path} missing: the test looks at the wrong places"
    outputs = list((var / "outputs" / study).rglob("*"))
    assert any(p.name.startswith("sr-") for p in outputs), outputs
    assert any(p.name.startswith("fhir-") and p.suffix == ".json" for p in outputs), outputs
    assert any(p.name.startswith("hl7-") for p in outputs), outputs

    loose = []
    for path in [var, *var.rglob("*")]:
        kind = path.lstat().st_mode
        if stat.S_ISDIR(kind):
            want = 0o700
        elif stat.S_ISREG(kind):
            want = 0o600
        else:
            loose.append(f"{path.relative_to(var)}: neither file nor folder")
            continue
        if _mode(path) != want:
            loose.append(f"{path.relative_to(var)}: {_mode(path):04o}, want {want:04o}")
    assert not loose, "\n".join(loose)


def test_no_log_line_names_the_patient_or_the_study_in_clear(served_study):
    log = served_study.log
    lines = log.splitlines()
    assert any(" DEBUG " in line for line in lines), "no DEBUG lines: the scan would see little"
    # the processes did log about this study, with hashed UIDs
    assert short_uid(served_study.uids["StudyInstanceUID"]) in log
    forbidden = {
        **{keyword: value for keyword, value in PATIENT.items()},
        **served_study.uids,
        "the bearer token": TOKEN,
    }
    name = PATIENT["PatientName"]
    forbidden |= {f"PatientName part {i}": part for i, part in enumerate(name.split("^"))}
    forbidden["PatientName (formatted)"] = "Ottoline Quillfeather"
    forbidden["PatientBirthDate (ISO)"] = "1951-04-17"
    found = [
        f"{what} in: {line[:300]}"
        for line in lines
        for what, value in forbidden.items()
        if value in line
    ]
    assert not found, "\n".join(found[:20])


def test_jobs_show_does_not_show_the_token(served_study):
    assert "EHR" in served_study.jobs_show
    assert TOKEN not in served_study.jobs_show

import socket

import pytest
from click.testing import CliRunner

from radground.cli import cli


@pytest.fixture
def runner(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)
    return CliRunner()


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["echo"], ["send"], ["studies"], ["routes", "test"], ["db", "upgrade"],
     ["web"], ["users"], ["users", "token"]],
)
def test_every_command_explains_itself(runner, command):
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_echo_to_a_closed_port_says_what_to_check(runner):
    result = runner.invoke(cli, ["echo", f"PACS@127.0.0.1:{closed_port()}"])
    assert result.exit_code == 1
    assert "could not connect" in result.output


def test_bad_destination_syntax(runner):
    result = runner.invoke(cli, ["echo", "not-a-destination"])
    assert result.exit_code == 2
    assert "AE@host:port" in result.output


def test_bad_config_is_reported_with_the_setting(runner, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[node]\nport = -1\n")
    result = runner.invoke(cli, ["--config", str(config), "studies"])
    assert result.exit_code == 1
    assert "node.port" in result.output


def test_send_reports_non_dicom_files_and_fails(runner, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not dicom")
    result = runner.invoke(cli, ["send", str(junk), "--to", f"PACS@127.0.0.1:{closed_port()}"])
    assert result.exit_code == 1
    assert "not a readable DICOM file" in result.output
    assert "0 of 1 instances stored" in result.output


def test_studies_on_an_empty_database(runner, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'db.sqlite'}'\n")
    result = runner.invoke(cli, ["--config", str(config), "studies"])
    assert result.exit_code == 0
    assert "No studies yet" in result.output


def test_node_refuses_to_start_without_the_fhir_secret(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("RG_TEST_EHR_TOKEN", raising=False)
    config = tmp_path / "c.toml"
    config.write_text(
        f"[node]\nport = {closed_port()}\nlistener_processes = 1\n"
        f"[storage]\nroot = '{tmp_path / 'instances'}'\nreserve_mb = 0\n"
        f"[database]\nurl = 'sqlite:///{tmp_path / 'db.sqlite'}'\n"
        f"[workers]\nbroker_url = 'radground+sqlite:///{tmp_path / 'broker.sqlite'}'\n"
        "[destinations.EHR]\ntype = 'fhir'\nurl = 'https://ehr.invalid/fhir'\nauth = "
        "'bearer'\ntoken_env = 'RG_TEST_EHR_TOKEN'\n"
    )
    result = runner.invoke(cli, ["--config", str(config), "node"])
    assert result.exit_code == 1
    assert "RG_TEST_EHR_TOKEN" in result.output and "empty or unset" in result.output


def test_send_skips_hidden_entries_of_a_directory(runner, tmp_path):
    """A storage root holds the node's staging area and temporary files: not instances to send."""
    root = tmp_path / "instances"
    (root / ".incoming").mkdir(parents=True)
    (root / ".incoming" / ".1.2.3.99.tmp").write_text("half an instance")
    (root / "1.2.3").mkdir()
    (root / "1.2.3" / ".1.2.3.4.tmp").write_text("half another")
    (root / "1.2.3" / "notes.txt").write_text("not dicom")

    result = runner.invoke(cli, ["send", str(root), "--to", f"PACS@127.0.0.1:{closed_port()}"])

    assert "0 of 1 instances stored" in result.output  # notes.txt only
    assert ".tmp" not in result.output


def _routes_config(tmp_path):
    config = tmp_path / "routes.toml"
    config.write_text(
        "[[routes]]\nname = 'ct-from-scanner'\nmodalities = ['CT']\ncalling_ae_titles "
        "= ['SCANNER1']\n"
        "[[routes]]\nname = 'chest-radiographs'\nmodalities = ['CR', 'DX']\nbody_parts "
        "= ['CHEST']\n"
        "series_description = '^PA'\nreview = 'before_ehr'\n"
    )
    return config


def test_routes_test_explains_which_route_a_file_takes_and_why_not_the_others(
    runner, tmp_path, shared_data
):
    from pydicom.uid import generate_uid

    from tests.factories import make_chest_dx, make_ct, write_dataset

    config = _routes_config(tmp_path)
    ct = make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid())
    ct.BodyPartExamined = "HEAD"
    write_dataset(ct, tmp_path / "ct" / "1.dcm")
    write_dataset(
        make_ct(
            study_instance_uid=ct.StudyInstanceUID,
            series_instance_uid=ct.SeriesInstanceUID,
            instance_number=2,
        ),
        tmp_path / "ct" / "2.dcm",
    )
    (tmp_path / "ct" / "notes.txt").write_text("not dicom")

    result = runner.invoke(cli, ["--config", str(config), "routes", "test", str(tmp_path / "ct")])
    assert result.exit_code == 1, result.output
    assert "2 instance(s) in 1 series; modality CT" in result.output
    assert "1 file(s) skipped: not readable DICOM" in result.output
    assert "route ct-from-scanner: no match\n    calling AE title is (empty), wanted SCANNER1 " \
           "(a file does not say who sent it: give --calling-ae)" in result.output
    assert (
        "route chest-radiographs: no match\n    modality is CT, wanted CR or DX\n"
        "    body part is HEAD, wanted CHEST\n    series description does not match /^PA/"
        in result.output
    )
    assert "No route matches: the study is stored and indexed but not processed." in result.output
    # no patient data
    assert "Test^Synthetic" not in result.output and "RG-TEST" not in result.output

    result = runner.invoke(
        cli,
        [
            "--config",
            str(config),
            "routes",
            "test",
            "--calling-ae",
            "SCANNER1",
            str(tmp_path / "ct"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "route ct-from-scanner: MATCHES 2 of 2 instance(s): model default, task detection"
        in result.output
    )
    assert "The study would be processed on route ct-from-scanner." in result.output

    dx = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / "00000072_000.png")
    dx.SeriesDescription = "PA chest"
    write_dataset(dx, tmp_path / "dx.dcm")
    result = runner.invoke(
        cli,
        [
            "--config",
            str(config),
            "routes",
            "test",
            "--calling-ae",
            "SCANNER1",
            str(tmp_path / "dx.dcm"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "route ct-from-scanner: no match\n    modality is DX, wanted CT\n" in result.output
    assert "route chest-radiographs: MATCHES 1 of 1 instance(s)" in result.output
    assert (
        "; review before_ehr: FHIR and HL7 destinations wait for a radiologist's sign-off"
        in result.output
    )


def test_routes_test_refuses_what_is_neither_a_file_nor_a_study(runner, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'db.sqlite'}'\n")
    result = runner.invoke(cli, ["--config", str(config), "routes", "test", "no-such-thing"])
    assert result.exit_code == 2
    assert "neither a file or directory nor a Study Instance UID" in result.output
    result = runner.invoke(cli, ["--config", str(config), "routes", "test", "1.2.3.4"])
    assert result.exit_code == 1
    assert "no study 1.2.3.4 in the index" in result.output


def test_send_failure_line_separates_status_and_reason_with_a_colon(runner, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not dicom")
    result = runner.invoke(cli, ["send", str(junk), "--to", f"PACS@127.0.0.1:{closed_port()}"])
    assert f"FAILED {junk}: not sent: not a readable DICOM file" in result.output


def test_send_does_not_print_pydicom_value_warnings(tmp_path):
    """pydicom's "Invalid value for VR UI: '<the UID>'" must not reach the CLI's stderr."""
    import os
    import subprocess
    import sys

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    invalid_uid = "1.2.3.not-a-uid"
    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.SOPInstanceUID = invalid_uid
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "bad-uid.dcm"
    dataset.save_as(path, enforce_file_format=True)

    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADGROUND_")}
    environment["PYTHONWARNINGS"] = "always"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "radground",
            "send",
            str(path),
            "--to",
            f"PACS@127.0.0.1:{closed_port()}",
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert "FAILED" in completed.stderr
    assert invalid_uid not in completed.stderr and "Invalid value" not in completed.stderr


def test_send_to_a_destination_that_is_not_dicom_says_so(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("RADGROUND_CONFIG", raising=False)
    config = tmp_path / "c.toml"
    config.write_text("[destinations.EHR]\ntype = 'fhir'\nurl = 'https://ehr.invalid/fhir'\n"
                      "[destinations.PACS]\nae_title = 'PACS'\nhost = '127.0.0.1'\nport = 104\n")
    junk = tmp_path / "x.dcm"
    junk.write_bytes(b"not dicom")
    result = runner.invoke(cli, ["--config", str(config), "send", str(junk), "--to", "EHR"])
    assert result.exit_code == 2
    assert "[destinations.EHR] is of type 'fhir'" in result.output and "(PACS)" in result.output

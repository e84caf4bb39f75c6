"""Drive the real DICOM validators on files the exporters wrote (see ../shared/TOOLS.md).

Plain functions, importable from any test (``from tests.exporters_validators import ...``,
as ``tests.factories`` is):

* :func:`dciodvfy_errors` — dicom3tools ``dciodvfy -new``: its exit status is not
  reliable, so the lines starting with ``Error`` are returned (and
  :func:`dciodvfy_warnings` gives the ``Warning`` lines);
* :func:`dsrdump_ok` — dcmtk ``dsrdump -v +Pt +Pl`` reads an SR (exit 0);
* :func:`pixelmed_sr_errors` — PixelMed ``DicomSRValidator`` (TID 1500 template
  check, ~20 s per file; Java 17 needs the three XPath limit flags);
* :func:`fhir_validate` / :func:`fhir_problems` — the npm FHIR R4 validators of
  ``tests/fhir_validators/validate.js`` (the official R4 JSON schema and FHIR.js),
  each Bundle entry on its own.

Each raises ``pytest.skip`` only when the tool is not installed (CI installs them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = [
    "FHIR_VALIDATORS",
    "dciodvfy_errors",
    "dciodvfy_warnings",
    "dsrdump_ok",
    "fhir_problems",
    "fhir_validate",
    "pixelmed_sr_errors",
    "pixelmed_sr_report",
]

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
#: The npm FHIR validators (``npm ci`` there installs them).
FHIR_VALIDATORS = Path(__file__).resolve().parent / "fhir_validators"
_JAVA_FLAGS = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (see ../shared/TOOLS.md)")
    return path


def _dciodvfy(path: str | Path) -> list[str]:
    result = subprocess.run(
        [_need("dciodvfy"), "-new", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return (result.stdout + result.stderr).splitlines()


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The ``Error`` lines ``dciodvfy -new`` prints for ``path`` (empty: conformant)."""
    return [line for line in _dciodvfy(path) if line.startswith("Error")]


def dciodvfy_warnings(path: str | Path) -> list[str]:
    """The ``Warning`` lines ``dciodvfy -new`` prints for ``path``."""
    return [line for line in _dciodvfy(path) if line.startswith("Warning")]


def dsrdump_ok(path: str | Path) -> bool:
    """Whether dcmtk's ``dsrdump -v +Pt +Pl`` reads the SR at ``path`` without a structural
    fault."""
    result = subprocess.run(
        [_need("dsrdump"), "-v", "+Pt", "+Pl", str(path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return result.returncode == 0


def pixelmed_sr_report(path: str | Path) -> list[str]:
    """Every line PixelMed's ``DicomSRValidator`` prints for ``path``."""
    java = _need("java")
    if not PIXELMED_JAR.is_file():
        pytest.skip(f"{PIXELMED_JAR} is not installed (Debian pixelmed-apps)")
    result = subprocess.run(
        [
            java,
            *_JAVA_FLAGS,
            "-cp",
            str(PIXELMED_JAR),
            "com.pixelmed.validate.DicomSRValidator",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return (result.stdout + result.stderr).splitlines()


def pixelmed_sr_errors(path: str | Path) -> list[str]:
    """The ``Error`` lines of PixelMed's ``DicomSRValidator`` for ``path`` (empty: no errors)."""
    return [line for line in pixelmed_sr_report(path) if line.lstrip().startswith("Error")]


#: Attributes highdicom stamps with the wall-clock time of creation.
_CLOCK_KEYWORDS = (
    "InstanceCreationDate",
    "InstanceCreationTime",
    "PresentationCreationDate",
    "PresentationCreationTime",
)


def comparable_bytes(dataset) -> bytes:
    """``dataset`` written to bytes without the wall-clock stamps highdicom adds
    (Instance and Presentation Creation Date/Time, the highdicom library's own Contribution
    DateTime), so two builds of the same job can be compared byte for byte."""
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    buffer = DicomBytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    ds = dcmread(buffer)
    for keyword in _CLOCK_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("ContributingEquipmentSequence", []):
        if item.get("ManufacturerModelName") == "highdicom" and "ContributionDateTime" in item:
            del item.ContributionDateTime
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def fhir_validate(directory: Path, *texts: str) -> list[dict]:
    """Run ``validate.js`` on FHIR Bundles given as JSON texts (written under ``directory``):
    one result per Bundle, ``{"file", "items": [{"path", "resourceType", "schema",
    "fhirjs"}], "errorCount"}``. Skips when node or the npm packages are missing."""
    import json

    node = _need("node")
    if not (FHIR_VALIDATORS / "node_modules").is_dir():
        pytest.skip(
            f"npm FHIR validators not installed: run `npm ci` in {FHIR_VALIDATORS} "
            "(.ci/bootstrap --test does)"
        )
    files = []
    for n, text in enumerate(texts):
        path = Path(directory) / f"bundle{n}.json"
        path.write_bytes(text.encode("utf-8"))
        files.append(str(path))
    done = subprocess.run(
        [node, str(FHIR_VALIDATORS / "validate.js"), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fhir_problems(result: dict) -> list[str]:
    """Schema errors and FHIR.js errors of one :func:`fhir_validate` result, plus FHIR.js
    warnings other than the "code not found in value set" ones it gives for value sets it
    cannot expand (LOINC, SNOMED CT, DICOM; required bindings are errors)."""
    problems = []
    for item in result["items"]:
        problems += [f"{item['path']} schema: {m}" for m in item["schema"]]
        problems += [
            f"{item['path']} FHIR.js: {m}"
            for m in item["fhirjs"]
            if m.startswith("error") or "not found in value set" not in m
        ]
    return problems

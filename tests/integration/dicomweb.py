"""Orthanc with its DICOMweb plugin (Debian ``orthanc-dicomweb``) for STOW-RS tests and benches.

:func:`orthanc_dicomweb` is an :class:`~tests.integration.orthanc.OrthancPACS`
whose config loads the plugin and serves DICOMweb at ``/dicom-web``;
:func:`dicomweb_base` is that service's base URL. :func:`qido_instances` and
:func:`wado_instance` read stored objects back through QIDO-RS (PS3.18 §10.6)
and WADO-RS (PS3.18 §10.4) with plain HTTP, independently of the client under test.
"""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path
from typing import Any

import httpx

from tests.integration.orthanc import OrthancNotInstalled, OrthancPACS

__all__ = ["DICOMWEB_PLUGIN", "dicomweb_base", "orthanc_dicomweb", "qido_instances", "wado_instance"]

#: Where Debian's ``orthanc-dicomweb`` puts the plugin.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web/"


def orthanc_dicomweb(workdir: Path, **kwargs: Any) -> OrthancPACS:
    """An (unstarted) Orthanc serving DICOMweb at ``/dicom-web``.

    Raises
    ------
    OrthancNotInstalled
        The plugin is missing (``.ci/bootstrap --test`` installs ``orthanc-dicomweb``).
    """
    if not DICOMWEB_PLUGIN.is_file():
        raise OrthancNotInstalled(f"no DICOMweb plugin at {DICOMWEB_PLUGIN}: `.ci/bootstrap --test` "
                                  "installs it (Debian package `orthanc-dicomweb`)")
    extra = dict(kwargs.pop("extra_config", {}))
    extra.update({"Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT}})
    return OrthancPACS(workdir, extra_config=extra, **kwargs)


def dicomweb_base(pacs: OrthancPACS) -> str:
    """The DICOMweb base URL of a started :func:`orthanc_dicomweb`."""
    return pacs.url + DICOMWEB_ROOT.rstrip("/")


def qido_instances(base: str, study_instance_uid: str) -> list[dict[str, Any]]:
    """QIDO-RS ``GET {base}/studies/{study}/instances`` as DICOM JSON (empty list when none)."""
    response = httpx.get(f"{base}/studies/{study_instance_uid}/instances",
                         headers={"Accept": "application/dicom+json"}, timeout=30, trust_env=False)
    if response.status_code == 204 or not response.content.strip():
        return []
    response.raise_for_status()
    return list(response.json())


def wado_instance(base: str, study: str, series: str, instance: str) -> bytes:
    """WADO-RS retrieve of one instance: the single ``application/dicom`` part's bytes."""
    response = httpx.get(f"{base}/studies/{study}/series/{series}/instances/{instance}",
                         headers={"Accept": 'multipart/related; type="application/dicom"'},
                         timeout=30, trust_env=False)
    response.raise_for_status()
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    parts = [p for p in message.iter_parts() if p.get_content_type() == "application/dicom"]
    if len(parts) != 1:
        raise AssertionError(f"WADO-RS answered {len(parts)} application/dicom parts, expected 1")
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload

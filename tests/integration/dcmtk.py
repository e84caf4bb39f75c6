"""Driving dcmtk's real command-line peers (echoscu, storescu) from tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

#: storescu option that proposes each compressed transfer syntax (and the uncompressed ones).
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
}

_RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: .ci/bootstrap --test installs dcmtk")
    return path


@dataclass(frozen=True)
class StorescuRun:
    returncode: int
    output: str

    @property
    def responses(self) -> list[str]:
        """The C-STORE responses in order, e.g. ``['Success', 'Error:
        DataSetDoesNotMatchSOPClass']``."""
        return _RESPONSE.findall(self.output)


def storescu(
    port: int,
    files: Sequence[Path],
    *,
    called: str = "RADGROUND",
    calling: str = "STORESCU",
    extra: Sequence[str] = (),
    nodelay: bool = False,
    timeout: float = 120,
) -> StorescuRun:
    """Run dcmtk's storescu (-v, -nh: keep going after a failure) and capture its responses."""
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    command = [require("storescu"), "-v", "-nh", "-R", "-aet", calling, "-aec", called, *extra,
               "127.0.0.1", str(port), *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    return StorescuRun(done.returncode, done.stdout + done.stderr)


def echoscu(
    port: int, *, called: str = "RADGROUND", calling: str = "ECHOSCU"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require("echoscu"), "-v", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def propose_flag(path: Path) -> str | None:
    """The storescu option for a file's transfer syntax (None: the default uncompressed
    proposal)."""
    syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return STORESCU_PROPOSE.get(syntax)

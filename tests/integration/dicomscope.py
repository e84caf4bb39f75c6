"""Drive DICOMscope (OFFIS's GSPS reference viewer) under Xvfb to render a
presentation state and grab the screen.

Used by the GSPS integration test to see where a real GSPS renderer draws our
graphics. DICOMscope has no command-line rendering, so this starts it on a
private X server, registers one image and one presentation state in a private
database, opens the presentation state through the study browser with xdotool
(keyboard navigation plus one double-click on the highlighted row) and takes an
``xwd`` screenshot. Everything it starts is killed by process group on exit.

Tools (Debian): dicomscope, dcmtk (dcmqridx), xvfb, xdotool, x11-apps (xwd),
imagemagick (convert); see TOOLS.md.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image

DICOMSCOPE_JAR = Path("/usr/share/java/DICOMscope.jar")
DICOMSCOPE_CFG = Path("/etc/dcmtk/DICOMscope.cfg")
_TOOLS = ("Xvfb", "xdotool", "xwd", "convert", "dcmqridx", "java")

SCREEN = (1280, 1024)
#: Where the first study row of the browser tree is (screen pixels, 1280x1024).
_STUDY_ROW = (150, 96)
#: The browser's selection highlight (RGB) in DICOMscope's default look and feel.
_HIGHLIGHT = np.array([184, 207, 229])


class DicomScopeError(RuntimeError):
    """DICOMscope could not be driven to show the presentation state."""


def missing_tools() -> list[str]:
    """What is missing to run DICOMscope here (empty when all is present)."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    missing += [str(p) for p in (DICOMSCOPE_JAR, DICOMSCOPE_CFG) if not p.is_file()]
    return missing


class DicomScope:
    """A DICOMscope session on a private X server, as a context manager.

    Parameters
    ----------
    workdir
        An empty folder for the configuration, database, logs and screenshots.
    timeout
        Seconds to wait for each step (window, tree, viewer).
    """

    def __init__(self, workdir: Path, *, timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.timeout = timeout
        self._xvfb: subprocess.Popen | None = None
        self._java: subprocess.Popen | None = None
        self._logs: list = []
        self.display = ""

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._start_xvfb()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill DICOMscope and the X server (each by its own process group)."""
        for proc in (self._java, self._xvfb):
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._java = self._xvfb = None
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _start_xvfb(self) -> None:
        read_fd, write_fd = os.pipe()
        log = open(self.workdir / "xvfb.log", "wb")  # noqa: SIM115 - closed in __exit__ (self._logs)
        self._logs.append(log)
        self._xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
             "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        os.close(write_fd)
        deadline = time.monotonic() + self.timeout
        data = b""
        with os.fdopen(read_fd, "rb") as pipe:
            while not data.endswith(b"\n"):
                if time.monotonic() > deadline or self._xvfb.poll() is not None:
                    raise DicomScopeError("Xvfb did not report a display (see xvfb.log)")
                chunk = pipe.read(1)
                if not chunk:
                    raise DicomScopeError("Xvfb closed its display pipe (see xvfb.log)")
                data += chunk
        self.display = f":{int(data.strip())}"

    # -- driving the viewer --------------------------------------------------

    def show(self, image: Path, presentation_state: Path, *, name: str = "dicomscope") -> Path:
        """Open ``presentation_state`` (which references ``image``) and return
        a PNG screenshot of the whole screen."""
        database = self.workdir / "db"
        database.mkdir()
        shutil.copyfile(image, database / "IMG.dcm")
        shutil.copyfile(presentation_state, database / "PR.dcm")
        self._run(["dcmqridx", "db", "db/IMG.dcm", "db/PR.dcm"])
        config = DICOMSCOPE_CFG.read_text(encoding="latin-1")
        # Only the [DATABASE] section's Directory points at the shared database.
        config, count = re.subn(
            r"(\[DATABASE\][^\[]*?^Directory\s*=\s*)(.*)$",
            lambda m: m.group(1) + str(database),
            config,
            count=1,
            flags=re.MULTILINE,
        )
        if count != 1:
            raise DicomScopeError(f"no [DATABASE] Directory line in {DICOMSCOPE_CFG}")
        # A free port for its message port, so that parallel runs do not clash.
        config = re.sub(
            r"^MessagePort\s*=.*$", f"MessagePort = {_free_port()}", config, flags=re.MULTILINE
        )
        (self.workdir / "DICOMscope.cfg").write_text(config, encoding="latin-1")

        log = open(self.workdir / "dicomscope.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._logs.append(log)
        self._java = subprocess.Popen(
            ["java", "-Xmx512m", "-jar", str(DICOMSCOPE_JAR)],
            cwd=self.workdir, env={**os.environ, "DISPLAY": self.display},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._xdotool(["search", "--sync", "--name", "DICOMscope"])
        # The study browser is ready when its first study row is drawn.
        self._wait_for(
            lambda shot: (
                _dark_fraction(shot[88:104, 40:300]) > 0.02
                and _white_fraction(shot[200:800, 100:900]) > 0.9
            ),
            "the study row in the browser",
        )
        self._xdotool(["mousemove", str(_STUDY_ROW[0]), str(_STUDY_ROW[1]), "click", "1"])
        # study > image series > image, then the presentation-state series > its PR
        for key in ("Right", "Down", "Right", "Down", "Down", "Right", "Down"):
            self._xdotool(["key", key])
            time.sleep(0.4)
        shot = self._wait_for(lambda s: _highlighted_row(s) is not None, "a highlighted PR row")
        row, column = _highlighted_row(shot)  # type: ignore[misc]
        self._xdotool(
            ["mousemove", str(column), str(row), "click", "--repeat", "2", "--delay", "80", "1"]
        )
        # The viewer replaces the white browser with the image area.
        self._wait_for(lambda s: _dark_fraction(s[80:900, 20:1000]) > 0.5, "the viewer")
        time.sleep(2.0)  # let it finish painting graphics and text
        path = self.workdir / f"{name}.png"
        Image.fromarray(self.screenshot()).save(path)
        return path

    def screenshot(self) -> np.ndarray:
        """The screen as an RGB array (rows, columns, 3)."""
        xwd = self._run(["xwd", "-root", "-silent", "-display", self.display], capture=True)
        png = subprocess.run(
            ["convert", "xwd:-", "png:-"],
            input=xwd,
            capture_output=True,
            timeout=self.timeout,
            check=True,
        ).stdout
        from io import BytesIO

        with Image.open(BytesIO(png)) as im:
            return np.asarray(im.convert("RGB"))

    def _wait_for(self, predicate, what: str) -> np.ndarray:
        deadline = time.monotonic() + self.timeout
        while True:
            if self._java is not None and self._java.poll() is not None:
                raise DicomScopeError(
                    f"DICOMscope exited while waiting for {what} (see dicomscope.log)"
                )
            shot = self.screenshot()
            if predicate(shot):
                return shot
            if time.monotonic() > deadline:
                Image.fromarray(shot).save(self.workdir / "timeout.png")
                raise DicomScopeError(f"timed out waiting for {what} (screen saved as timeout.png)")
            time.sleep(0.5)

    def _xdotool(self, args: list[str]) -> None:
        self._run(["xdotool", *args])

    def _run(self, args: list[str], *, capture: bool = False) -> bytes:
        try:
            done = subprocess.run(
                args, cwd=self.workdir, env={**os.environ, "DISPLAY": self.display},
                capture_output=True, timeout=self.timeout, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DicomScopeError(f"{args[0]} timed out after {self.timeout:.0f} s") from exc
        if done.returncode != 0:
            raise DicomScopeError(
                f"{' '.join(args[:2])} failed: {done.stderr.decode(errors='replace')[-500:]}"
            )
        return done.stdout if capture else b""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dark_fraction(region: np.ndarray) -> float:
    return float((region.sum(axis=2) < 600).mean())


def _white_fraction(region: np.ndarray) -> float:
    return float((region.min(axis=2) > 240).mean())


def _highlighted_row(shot: np.ndarray) -> tuple[int, int] | None:
    """(row, column) in the middle of the browser's highlighted row, if any."""
    browser = shot[50:900, :1000].astype(int)
    mask = (np.abs(browser - _HIGHLIGHT).sum(axis=2) < 12)
    rows = np.nonzero(mask.sum(axis=1) > 50)[0]
    if rows.size == 0:
        return None
    row = int(np.median(rows))
    columns = np.nonzero(mask[row])[0]
    return 50 + row, int(columns.min() + 40)

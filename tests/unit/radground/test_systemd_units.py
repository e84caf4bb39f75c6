"""The systemd units in docs/systemd/: each runs a real `radground` command as the dedicated
unprivileged user, confined (no capabilities, read-only system but its state folder, private
/tmp, no home folders, no new privileges, umask 0077), and `systemd-analyze verify` (where
installed) reads them without a complaint."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path, PurePosixPath

import pytest

from radground.cli import cli
from radground.settings import load_settings
from tests.unit.radground.test_deployment_files import REPO, resolve_cli

UNITS = REPO / "docs" / "systemd"
SYSUSERS = UNITS / "radground.sysusers.conf"
#: unit file -> the radground command it runs (an instance name for templates).
COMMANDS = {
    "radground.service": ("serve", None),
    "radground-node.service": ("node", None),
    "radground-worker@.service": ("worker", "gpu"),
    "radground-web.service": ("web", None),
}
#: Directives every unit carries, with their exact value.
CONFINEMENT = {
    "User": "radground",
    "Group": "radground",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
    "StateDirectoryMode": "0700",
    "RestrictSUIDSGID": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values in order (systemd keys may repeat; an empty value resets)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        assert section is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        sections[section][key.strip()].append(value.strip())
    return sections


def last(unit: dict[str, dict[str, list[str]]], key: str, section: str = "Service") -> str | None:
    values = unit[section].get(key)
    return values[-1] if values else None


@pytest.fixture(params=sorted(COMMANDS))
def unit_file(request) -> Path:
    return UNITS / request.param


def test_every_unit_is_listed():
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(COMMANDS)


def test_unit_runs_a_real_radground_command(unit_file):
    unit = parse_unit(unit_file)
    command, instance = COMMANDS[unit_file.name]
    (exec_start,) = unit["Service"]["ExecStart"]
    argv = shlex.split(exec_start.replace("%i", instance or ""))
    assert PurePosixPath(argv[0]).name == "radground" and PurePosixPath(argv[0]).is_absolute()
    if command not in cli.commands:
        pytest.skip(f"`radground {command}` is not in this build's CLI")
    assert resolve_cli(argv[1:]).name == command
    if instance is not None:
        assert "%i" in exec_start  # the template's instance is the queue
        assert resolve_cli(shlex.split(exec_start.replace("%i", "io"))[1:]).name == command
    assert last(unit, "WantedBy", "Install") == "multi-user.target"


def test_unit_runs_confined_as_the_dedicated_user(unit_file):
    unit = parse_unit(unit_file)
    for key, value in CONFINEMENT.items():
        assert last(unit, key) == value, f"{unit_file.name}: {key}={last(unit, key)!r}"
    state = PurePosixPath("/var/lib") / last(unit, "StateDirectory")
    assert str(state) in unit["Service"]["ReadWritePaths"], unit_file.name
    assert last(unit, "WorkingDirectory") == str(state)
    assert last(unit, "Environment") == "RADGROUND_CONFIG=/etc/radground/radground.toml"
    # SIGTERM to RadGround's own supervisor, which stops its children warmly
    assert last(unit, "KillMode") == "mixed"
    assert "C_FORCE_ROOT" not in " ".join(unit["Service"].get("Environment", []))


def test_the_dedicated_user_is_declared_for_systemd_sysusers():
    entries = [line.split() for line in SYSUSERS.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    users = {fields[1]: fields for fields in entries if fields[0] == "u"}
    assert set(users) == {"radground"}
    home = shlex.split(" ".join(users["radground"]))[-2]
    assert home == "/var/lib/radground"
    for name in COMMANDS:
        assert last(parse_unit(UNITS / name), "User") in users


def test_the_default_config_writes_only_where_the_units_allow(unit_file):
    """The shipped config's relative paths (var/...) land under ReadWritePaths= when resolved
    from the unit's WorkingDirectory=."""
    unit = parse_unit(unit_file)
    writable = [PurePosixPath(p) for p in unit["Service"]["ReadWritePaths"]]
    cwd = PurePosixPath(last(unit, "WorkingDirectory"))
    settings = load_settings(REPO / "config" / "radground.toml")
    paths = [settings.storage.root, settings.workers.outputs_root, settings.web.state_dir,
             settings.database.url.removeprefix("sqlite:///"),
             settings.workers.broker_url.split(":///", 1)[1]]
    for path in map(PurePosixPath, map(str, paths)):
        absolute = path if path.is_absolute() else cwd / path
        assert any(absolute.is_relative_to(w) for w in writable), f"{unit_file.name}: {absolute}"


def test_only_the_node_may_be_given_the_one_capability_for_port_104():
    """The node's comment documents the drop-in for port 104; no unit grants it by default."""
    text = (UNITS / "radground-node.service").read_text()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in text
    for name in COMMANDS:
        unit = parse_unit(UNITS / name)
        assert not last(unit, "AmbientCapabilities") and not last(unit, "CapabilityBoundingSet")


def _verify_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A file system root for `systemd-analyze verify --root`: the host's system units, the
    units under test, and an executable where their ExecStart= points."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for name, text in units.items():
        (target / name).write_text(text)
        for exec_start in parse_unit(target / name)["Service"]["ExecStart"]:
            program = root / shlex.split(exec_start)[0].lstrip("/")
            program.parent.mkdir(parents=True, exist_ok=True)
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
    return root


def _verify(root: Path, names: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no",
         *[n.replace("@.", "@gpu.") for n in names]],
        cwd=root / "etc/systemd/system", capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


@pytest.fixture
def systemd_analyze():
    if shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir():
        pytest.skip("systemd-analyze not installed; the directive tests above still run")


def test_systemd_analyze_verify_accepts_every_unit(tmp_path, systemd_analyze):
    units = {name: (UNITS / name).read_text() for name in COMMANDS}
    done = _verify(_verify_root(tmp_path, units), sorted(units))
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not output, output


def test_systemd_analyze_verify_reports_a_broken_directive(tmp_path, systemd_analyze):
    """The check above can fail: a misspelt value and an unknown key are reported."""
    text = (UNITS / "radground-node.service").read_text()
    broken = re.sub("^ProtectSystem=strict$", "ProtectSystem=strickt", text, flags=re.MULTILINE)
    broken = re.sub("^PrivateTmp=yes$", "PrivateTemp=yes", broken, flags=re.MULTILINE)
    done = _verify(_verify_root(tmp_path, {"radground-node.service": broken}),
                   ["radground-node.service"])
    output = done.stdout + done.stderr
    assert "strickt" in output and "PrivateTemp" in output, output


@pytest.mark.parametrize(("uid", "warned"), [(0, True), (10001, False)])
def test_celery_warns_about_a_superuser_only_when_the_worker_runs_as_root(
    tmp_path, monkeypatch, uid, warned
):
    """The check a RadGround worker makes at start (Celery's ``check_privileges`` on the
    configured app's accepted content) warns for root and stays silent for the units' and
    images' unprivileged user; with JSON only it never refuses, so no C_FORCE_ROOT is needed."""
    import warnings

    from celery import platforms

    from radground.runtime import configure_celery
    from radground.settings import Settings, WorkerSettings

    settings = Settings(workers=WorkerSettings(
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        outputs_root=tmp_path / "outputs"))
    accepted = configure_celery(settings).conf.accept_content
    assert set(accepted) == {"json"}
    monkeypatch.delenv("C_FORCE_ROOT", raising=False)
    for name in ("getuid", "geteuid"):
        monkeypatch.setattr(platforms.os, name, lambda: uid)
    monkeypatch.setattr(platforms.grp, "getgrgid", lambda gid: ("radground", "x", gid, []))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        platforms.check_privileges(accepted)
    superuser = [w for w in caught if "superuser privileges" in str(w.message)]
    assert bool(superuser) is warned

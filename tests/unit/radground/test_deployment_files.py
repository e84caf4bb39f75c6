"""The deployment files: docker-compose.yml, Dockerfile, .dockerignore,
config/cluster.example.toml and docker/orthanc/.

No Docker engine runs here, so these tests read the files and hold them to
what RadGround itself accepts: every ``radground`` command line in them parses
with the real CLI, every ``RADGROUND_*`` variable names a real setting and the
settings they produce are the ones the services need (shared storage, the
right broker and database hosts, a destination for each route), and the demo
PACS's routing script runs in a real Orthanc.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from radground.cli import cli
from radground.settings import ModelSettings, Settings, load_settings

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CLUSTER_CONFIG = REPO / "config" / "cluster.example.toml"
ORTHANC_DIR = REPO / "docker" / "orthanc"

RADGROUND_SERVICES = ("migrate", "node", "worker-gpu", "worker-io")
LONG_RUNNING = ("node", "worker-gpu", "worker-io")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for key in list(os.environ):
        if key.startswith("RADGROUND_") or key == "PGPASSWORD":
            monkeypatch.delenv(key)


# -- reading the files ------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (``${X}``, ``${X:-default}``, ``${X-default}``, ``$$``)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        if match.group("op") == ":-":
            return env.get(name) or match.group("default")
        if match.group("op") == "-":
            return env.get(name, match.group("default"))
        if name not in env:
            raise AssertionError(
                f"${{{name}}} has no default: `docker compose up` would need it set"
            )
        return env[name]

    return _VARIABLE.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml with YAML merges resolved and variables at their defaults."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env={})


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def command_args(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume, or a host path relative to the compose file)."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume["source"], volume["target"]
        else:
            source, target = volume.split(":")[:2]
        result[target] = source
    return result


def host_path(source: str) -> Path:
    return (COMPOSE_FILE.parent / source).resolve()


def settings_of(service: Mapping[str, Any], monkeypatch) -> Settings:
    """The settings a RadGround container of this service starts with.

    The service's environment is applied as is, except that RADGROUND_CONFIG
    (a path inside the container) is mapped to the host file mounted there.
    """
    env = service_environment(service)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    container_config = env["RADGROUND_CONFIG"]
    mounted = mounts(service)
    assert container_config in mounted, f"nothing is mounted at RADGROUND_CONFIG={container_config}"
    config = host_path(mounted[container_config])
    assert config.is_file(), f"{config} (mounted at {container_config}) does not exist"
    monkeypatch.setenv("RADGROUND_CONFIG", str(config))
    return load_settings()


def resolve_cli(args: list[str]) -> click.Command:
    """Parse ``radground ARGS`` with the real CLI (options and values checked,
    nothing run); the leaf command it reaches."""
    context = cli.make_context("radground", list(args))
    command: click.Command = cli
    while isinstance(command, click.Group):
        # click >= 8.2; before: protected_args
        protected = getattr(context, "_protected_args", None)
        remaining = [*(context.protected_args if protected is None else protected), *context.args]
        assert remaining, f"`radground {' '.join(args)}` stops at group {command.name!r}"
        name, sub, rest = command.resolve_command(context, remaining)
        context = sub.make_context(name, rest, parent=context)
        command = sub
    return command


# Dockerfile -----------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stage name -> {"base": image (ARG defaults substituted), "steps": [(INSTR, args), ...]}."""
    args: dict[str, str] = {}
    stages: dict[str, dict[str, Any]] = {}
    current = None
    for keyword, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            current = stages[name] = {"base": image, "steps": []}
        else:
            assert current is not None, f"{keyword} before the first FROM"
            current["steps"].append((keyword, rest))
    return stages


def stage_steps(stage: Mapping[str, Any], keyword: str) -> list[str]:
    return [rest for kw, rest in stage["steps"] if kw == keyword]


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"{rest!r} is not the exec (JSON array) form"
    return value


# -- docker-compose.yml ---------------------------------------------------------------

def test_compose_runs_the_cluster_with_a_pacs_and_an_ehr(compose):
    services = compose["services"]
    assert set(services) >= {
        "postgres",
        "redis",
        "migrate",
        "node",
        "worker-gpu",
        "worker-io",
        "orthanc",
        "fhir",
    }
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["orthanc"]["image"].split(":")[0] in {"jodogne/orthanc", "orthancteam/orthanc"}
    assert services["fhir"]["image"].split(":")[0] == "hapiproject/hapi"
    for name in RADGROUND_SERVICES:
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"].startswith("radground:")


@pytest.mark.parametrize("name", RADGROUND_SERVICES)
def test_every_radground_command_in_compose_parses_with_the_cli(compose, name):
    args = command_args(compose["services"][name]["command"])
    command = resolve_cli(args)
    expected = {
        "migrate": "upgrade",
        "node": "node",
        "worker-gpu": "worker",
        "worker-io": "worker",
    }[name]
    assert command.name == expected
    if name.startswith("worker-"):
        assert args[args.index("--queues") + 1] == name.removeprefix("worker-")


def test_cli_parsing_rejects_what_radground_would_reject():
    # The check above must be able to fail: a bad queue, an unknown option or command.
    for args in (["worker", "--queues", "cpu"], ["node", "--bogus"], ["nodes"], ["db"]):
        with pytest.raises((click.UsageError, AssertionError)):
            resolve_cli(args)


@pytest.mark.parametrize("name", RADGROUND_SERVICES)
def test_radground_environment_variables_name_real_settings(compose, name):
    env = service_environment(compose["services"][name])
    assert env["RADGROUND_CONFIG"]
    for key in env:
        if key.startswith("RADGROUND_") and key != "RADGROUND_CONFIG":
            path = key.removeprefix("RADGROUND_").lower().split("__")
            model: Any = Settings
            for depth, part in enumerate(path):
                assert isinstance(model, type) and issubclass(model, BaseModel), (
                    f"{key}: {part!r} is past a value"
                )
                if model is Settings and path[0] == "models" and depth == 1:
                    model = ModelSettings  # models.<name>.<field>
                    continue
                assert part in model.model_fields, f"{key}: no setting {'.'.join(path[:depth + 1])}"
                annotation = model.model_fields[part].annotation
                model = annotation if isinstance(annotation, type) else None
                if part == "models":
                    model = Settings


@pytest.mark.parametrize("name", RADGROUND_SERVICES)
def test_compose_settings_point_at_the_compose_services(compose, name, monkeypatch):
    services = compose["services"]
    service = services[name]
    env = service_environment(service)
    settings = settings_of(service, monkeypatch)

    assert settings.database.url == env["RADGROUND_DATABASE__URL"]
    database = make_url(settings.database.url)
    postgres = services["postgres"]["environment"]
    assert database.get_backend_name() == "postgresql"
    assert database.host == "postgres" and database.database == postgres["POSTGRES_DB"]
    assert database.username == postgres["POSTGRES_USER"]
    # The password is a secret from the environment, the same one the server gets, never in the URL.
    assert database.password is None
    assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
    assert "${RADGROUND_DB_PASSWORD" in COMPOSE_FILE.read_text()

    assert settings.workers.broker_url == env["RADGROUND_WORKERS__BROKER_URL"]
    broker = make_url(settings.workers.broker_url)
    assert broker.drivername == "redis" and broker.host == "redis" and (broker.port or 6379) == 6379

    assert settings.logging.level == env["RADGROUND_LOGGING__LEVEL"]


def test_environment_overrides_really_override_the_mounted_file(compose, monkeypatch):
    service = dict(compose["services"]["worker-io"])
    service["environment"] = {**service_environment(service),
                              "RADGROUND_DATABASE__URL": "postgresql://other@db.example/x",
                              "RADGROUND_MODELS__DEFAULT__BACKEND": "onnx"}
    settings = settings_of(service, monkeypatch)
    assert settings.database.url == "postgresql://other@db.example/x"
    # A nested override keeps the file's other values of that section.
    assert settings.models["default"].backend == "onnx"
    assert (
        settings.models["default"].path
        == tomllib.loads(CLUSTER_CONFIG.read_text())["models"]["default"]["path"]
    )


def test_node_and_workers_share_storage_and_outputs(compose, monkeypatch):
    services = compose["services"]
    settings = settings_of(services["node"], monkeypatch)
    storage, outputs = str(settings.storage.root), str(settings.workers.outputs_root)
    assert PurePosixPath(storage).is_absolute() and PurePosixPath(outputs).is_absolute()
    sources = {name: mounts(services[name]) for name in LONG_RUNNING}
    # The same named volume at the same path in the node and every worker.
    for path in (storage, outputs):
        volumes = {sources[name].get(path) for name in LONG_RUNNING}
        assert len(volumes) == 1 and None not in volumes, (
            f"{path} is not one shared volume: {volumes}"
        )
        assert volumes.pop() in compose["volumes"]
    # TensorRT engines are cached beside outputs_root (radground.runtime.build_context).
    engines = str(PurePosixPath(outputs).parent / "engines")
    assert sources["worker-gpu"].get(engines) in compose["volumes"]


def test_services_start_in_order_and_migrations_run_first(compose):
    services = compose["services"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert command_args(services["migrate"]["command"]) == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_gpu_worker_gets_an_nvidia_gpu_and_the_tensorrt_image(compose, monkeypatch):
    service = compose["services"]["worker-gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia"
        and "gpu" in d["capabilities"]
        and (d.get("count") or d.get("device_ids"))
        for d in devices
    )
    target = service["build"]["target"]
    assert dockerfile_stages()[target]["base"].startswith("nvcr.io/nvidia/tensorrt:")
    assert re.fullmatch(
        r"nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3", dockerfile_stages()[target]["base"]
    )
    # Its default model is TensorRT on the ONNX file the GPU image provides at that path.
    settings = settings_of(service, monkeypatch)
    for route in settings.routes:
        model = settings.models[route.model]
        assert model.backend == "tensorrt"
        assert any(model.path in run for run in stage_steps(dockerfile_stages()[target], "RUN"))
    # The other RadGround services run the CPU image.
    for name in ("migrate", "node", "worker-io"):
        assert compose["services"][name]["build"]["target"] == "runtime"
        assert "deploy" not in compose["services"][name]


def test_node_publishes_its_dicom_port_on_every_interface(compose, monkeypatch):
    service = compose["services"]["node"]
    settings = settings_of(service, monkeypatch)
    assert settings.node.host == "0.0.0.0"
    targets = [int(str(p).rsplit(":", 1)[-1]) for p in service["ports"]]
    assert settings.node.port in targets


def test_orthanc_and_radground_know_each_other(compose, monkeypatch):
    services = compose["services"]
    settings = settings_of(services["node"], monkeypatch)
    orthanc_service = services["orthanc"]
    config_dir = next(
        target
        for target, source in mounts(orthanc_service).items()
        if host_path(source) == ORTHANC_DIR
    )
    assert command_args(orthanc_service["command"]) in (
        ["/etc/orthanc/"],
        [config_dir],
        [config_dir + "/"],
    )
    orthanc = json.loads((ORTHANC_DIR / "orthanc.json").read_text())

    pacs = settings.destinations["PACS"]
    assert (pacs.ae_title, pacs.host, pacs.port) == (
        orthanc["DicomAet"],
        "orthanc",
        orthanc["DicomPort"],
    )
    assert any(
        peer.to_peer().matches(orthanc["DicomAet"], "172.18.0.7")
        for peer in settings.node.allowed_peers
    )
    assert orthanc["DicomModalities"]["radground"] == [
        settings.node.ae_title,
        "node",
        settings.node.port,
    ]
    assert orthanc["DicomAlwaysAllowStore"] is True  # RadGround's SR/GSPS are accepted
    published = [int(str(p).rsplit(":", 1)[-1]) for p in orthanc_service["ports"]]
    assert orthanc["DicomPort"] in published and orthanc["HttpPort"] in published
    for script in orthanc["LuaScripts"]:
        relative = PurePosixPath(script).relative_to(config_dir)
        assert (ORTHANC_DIR / relative).is_file(), f"{script} is not in {ORTHANC_DIR}"


def test_fhir_endpoint_is_the_compose_hapi_server(compose, monkeypatch):
    settings = settings_of(compose["services"]["worker-io"], monkeypatch)
    ehr = make_url(settings.destinations["EHR"].url.replace("http://", "http+x://", 1))
    assert (ehr.host, ehr.port, ehr.database) == ("fhir", 8080, "fhir")
    assert any(str(p).endswith(":8080") for p in compose["services"]["fhir"]["ports"])
    assert settings.destinations["EHR"].patient_identifier_system


# -- config/cluster.example.toml -------------------------------------------------------

def test_cluster_example_loads_and_routes_reach_configured_destinations():
    settings = load_settings(CLUSTER_CONFIG)
    assert settings.database.url.startswith("postgresql://")
    assert settings.workers.broker_url.startswith(("redis://", "amqp://"))
    assert settings.workers.visibility_timeout_seconds > settings.workers.task_time_limit_seconds
    chest = next(route for route in settings.routes if set(route.modalities) & {"CR", "DX"})
    assert chest.destinations == ("PACS", "EHR")
    for route in settings.routes:
        assert route.model in settings.models
        for name in route.destinations:
            assert name in settings.destinations
    # the compose HAPI; a real EHR uses token_env
    assert settings.destinations["EHR"].auth == "none"


def test_cluster_example_holds_no_secrets():
    raw = tomllib.loads(CLUSTER_CONFIG.read_text())
    assert make_url(raw["database"]["url"]).password is None
    assert make_url(raw["workers"]["broker_url"]).password is None
    for destination in raw.get("destinations", {}).values():
        assert not {"token", "password"} & set(destination)


def test_container_healthcheck_is_answered_by_the_cluster_node(tmp_path, monkeypatch):
    """The image's HEALTHCHECK (C-ECHO from RADGROUND to 127.0.0.1) passes the
    cluster config's allowed_peers, against a real listener built from it."""
    from click.testing import CliRunner

    from dicom_node.scu import Destination, StorageSCU
    from radground.node import build_scp

    settings = load_settings(CLUSTER_CONFIG)
    settings = settings.model_copy(
        update={
            "node": settings.node.model_copy(update={"host": "127.0.0.1", "port": 0}),
            "storage": settings.storage.model_copy(update={"root": tmp_path / "instances"}),
            "database": settings.database.model_copy(
                update={"url": f"sqlite:///{tmp_path / 'index.db'}"}
            ),
        }
    )
    scp = build_scp(settings)
    _, port = scp.start("127.0.0.1", 0)
    try:
        args = runtime_healthcheck_args()
        assert args[:2] == ["radground", "echo"]
        target = args[2].replace(":11112", f":{port}")
        result = CliRunner().invoke(cli, ["--config", str(CLUSTER_CONFIG), "echo", target])
        assert result.exit_code == 0, result.output
        # ... and a calling AE the config does not allow is refused (the check can fail).
        assert not StorageSCU("INTRUDER").echo(Destination("RADGROUND", "127.0.0.1", port)).ok
    finally:
        scp.stop()


# -- Dockerfile and .dockerignore --------------------------------------------------------

def runtime_healthcheck_args() -> list[str]:
    (healthcheck,) = stage_steps(dockerfile_stages()["runtime"], "HEALTHCHECK")
    _options, _, command = healthcheck.partition("CMD")
    return exec_form(command.strip())


def test_default_image_is_the_slim_runtime_running_radground_serve():
    stages = dockerfile_stages()
    name, runtime = list(stages.items())[-1]  # `docker build .` builds the last stage
    assert name == "runtime"
    assert runtime["base"] == "python:3.11-slim-bookworm"
    assert exec_form(stage_steps(runtime, "ENTRYPOINT")[-1]) == ["radground"]
    cmd = exec_form(stage_steps(runtime, "CMD")[-1])
    assert resolve_cli(cmd).name == "serve"
    assert "11112" in stage_steps(runtime, "EXPOSE")[-1].split()
    healthcheck = runtime_healthcheck_args()
    assert healthcheck == ["radground", "echo", "RADGROUND@127.0.0.1:11112"]
    assert resolve_cli(healthcheck[1:]).name == "echo"


def test_images_run_as_an_unprivileged_user():
    """The last USER of each image is a system user the stage creates with a non-zero uid
    (so Celery never runs as a superuser), owning its data folder, which only it may open."""
    for name in ("runtime", "gpu"):
        stage = dockerfile_stages()[name]
        users = stage_steps(stage, "USER")
        assert users and users[-1].split(":")[0] not in {"root", "0"}, name
        user = users[-1].split(":")[0]
        runs = " ".join(stage_steps(stage, "RUN"))
        created = re.search(rf"useradd (?:--?\S+ \S+ |--system )*?--uid (\d+)[^&]*? {user}\b",
                            runs)
        assert created and int(created.group(1)) >= 1000, f"{name}: {user} is not created"
        home = re.search(rf"--home-dir (\S+)[^&]*? {user}\b", runs).group(1)
        assert f"chown -R {user}:{user} {home}" in runs, name
        assert re.search(rf"chmod -R u=rwX,go= {home}(\s|$)", runs), name
        steps = [keyword for keyword, _ in stage["steps"]]
        assert stage_steps(stage, "WORKDIR")[-1] == home, name
        last_user = len(steps) - 1 - steps[::-1].index("USER")
        assert "RUN" not in steps[last_user:], f"{name}: RUN after USER {user}"


def test_compose_services_keep_the_images_user_and_no_privileges(compose):
    for name in RADGROUND_SERVICES:
        service = compose["services"][name]
        assert str(service.get("user", "radground")).split(":")[0] not in {"root", "0"}, name
        assert not service.get("privileged"), name
        assert not service.get("cap_add"), name
        environment = service_environment(service)
        assert "C_FORCE_ROOT" not in environment, name  # Celery's switch to run as root


def test_entrypoint_is_the_radground_console_script():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["radground"] == "radground.cli:main"
    for name in ("runtime", "gpu"):
        assert exec_form(stage_steps(dockerfile_stages()[name], "ENTRYPOINT")[-1]) == ["radground"]


def test_images_install_the_package_without_test_extras():
    stages = dockerfile_stages()
    installs = {name: [run for run in stage_steps(stage, "RUN") if "pip install" in run]
                for name, stage in stages.items()}
    assert any(re.search(r"pip install \.(\s|$)", run) for run in installs["build"])
    assert any("pip install \".[gpu]\"" in run for run in installs["gpu"])
    everything = " ".join(run for runs in installs.values() for run in runs)
    assert "[test]" not in everything and "test]" not in everything
    # The runtime gets the virtual environment the build stage installed into.
    assert any("--from=build /opt/venv" in copy for copy in stage_steps(stages["runtime"], "COPY"))


def test_image_default_config_listens_on_all_interfaces(tmp_path):
    """The runtime's sed turns config/radground.toml into the container's default config: the
    DICOM node and the web surface listen on the container's network (its loopback is useless)."""
    (run,) = [r for r in stage_steps(dockerfile_stages()["runtime"], "RUN") if "sed -i" in r]
    expression = re.search(r"sed -i '([^']+)'", run).group(1)
    _, pattern, replacement, _ = expression.split("/")
    original = (REPO / "config" / "radground.toml").read_text()
    edited, count = re.subn(pattern, replacement, original, flags=re.MULTILINE)
    assert count == 2
    config = tmp_path / "radground.toml"
    config.write_text(edited)
    settings, defaults = load_settings(config), load_settings(REPO / "config" / "radground.toml")
    assert settings.node.host == settings.web.host == "0.0.0.0"
    changed = {
        key for key, value in settings.model_dump().items() if defaults.model_dump()[key] != value
    }
    assert changed == {"node", "web"}
    assert settings.node.model_copy(update={"host": defaults.node.host}) == defaults.node
    assert settings.web.model_copy(update={"host": defaults.web.host}) == defaults.web


def _dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((line.startswith("!"), line.lstrip("!").strip("/")))
    return patterns


def _glob_regex(pattern: str) -> str:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i:end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return regex


def in_build_context(path: str) -> bool:
    """Whether ``path`` (relative to the repository) is sent to the builder, per .dockerignore
    (the last matching pattern wins; a pattern matching a parent directory covers its files)."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, pattern in _dockerignore_patterns():
        if any(re.fullmatch(_glob_regex(pattern), candidate) for candidate in candidates):
            included = negated
    return included


def _context_files(source: str) -> Iterator[str]:
    path = REPO / source
    if path.is_file():
        yield source
        return
    for file in sorted(path.rglob("*")):
        if file.is_file() and "__pycache__" not in file.parts:
            yield file.relative_to(REPO).as_posix()


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest():
    copied = []
    for stage in dockerfile_stages().values():
        for copy in stage_steps(stage, "COPY"):
            if "--from=" in copy:
                continue
            copied += copy.split()[:-1]
    assert {"pyproject.toml", "README.md", "radground", "engine", "config/radground.toml"} <= set(
        copied
    )
    for source in copied:
        files = list(_context_files(source))
        assert files, f"COPY {source}: nothing there"
        left_out = [f for f in files if not in_build_context(f)]
        assert not left_out, f".dockerignore leaves out {left_out[:5]}"
    for outside in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "var/radground.db",
                    "engine/__pycache__/report.cpython-311.pyc", "docker-compose.yml"):
        assert not in_build_context(outside), outside


# -- the demo PACS's routing script, in a real Orthanc --------------------------------------

def test_orthanc_forwards_to_radground_but_not_radground_own_results(tmp_path):
    import pydicom
    from pydicom.uid import generate_uid
    from pynetdicom import AE, StoragePresentationContexts, evt

    from dicom_node.scu import Destination, StorageSCU
    from tests.factories import make_ct, write_dataset
    from tests.integration.orthanc import (
        _MANAGED_KEYS,
        OrthancNotInstalled,
        OrthancPACS,
        find_orthanc,
    )

    try:
        find_orthanc()
    except OrthancNotInstalled as exc:
        pytest.fail(str(exc))

    received: list[str] = []
    lock = threading.Lock()

    def on_store(event):
        with lock:
            received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    peer = AE(ae_title="RADGROUND")
    peer.supported_contexts = StoragePresentationContexts
    server = peer.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    port = server.server_address[1]

    config = json.loads((ORTHANC_DIR / "orthanc.json").read_text())
    ((name, (ae_title, _host, _port)),) = config["DicomModalities"].items()
    extra = {key: value for key, value in config.items() if key not in _MANAGED_KEYS}
    extra["LuaScripts"] = [str(ORTHANC_DIR / PurePosixPath(s).name) for s in config["LuaScripts"]]

    study = generate_uid()
    uploaded = write_dataset(make_ct(study_instance_uid=study, series_instance_uid=generate_uid(),
                                     rows=8, columns=8), tmp_path / "uploaded.dcm")
    ours = write_dataset(make_ct(study_instance_uid=study, series_instance_uid=generate_uid(),
                                 rows=8, columns=8), tmp_path / "ours.dcm")
    control = write_dataset(make_ct(study_instance_uid=study, series_instance_uid=generate_uid(),
                                    rows=8, columns=8), tmp_path / "control.dcm")
    uid = {path: str(pydicom.dcmread(path).SOPInstanceUID) for path in (uploaded, ours, control)}
    try:
        with OrthancPACS(tmp_path / "orthanc", modalities={name: (ae_title, "127.0.0.1", port)},
                         extra_config=extra) as pacs:
            pacs.upload(uploaded)
            pacs.wait_for(
                lambda: uid[uploaded] in received or None,
                timeout=20,
                what="uploaded instance forwarded",
            )
            # RadGround's results arrive over DICOM from AE RADGROUND: stored, not sent back.
            (result,) = StorageSCU("RADGROUND").send(
                [ours], Destination("ORTHANC", "127.0.0.1", pacs.dicom_port)
            )
            assert result.ok, result
            pacs.upload(control)
            pacs.wait_for(
                lambda: uid[control] in received or None,
                timeout=20,
                what="control instance forwarded",
            )
            time.sleep(1.0)
            stored = {i["SOPInstanceUID"] for i in pacs.instances_of_study(study)}
            assert stored == set(uid.values())
            assert uid[ours] not in received
    finally:
        server.shutdown()

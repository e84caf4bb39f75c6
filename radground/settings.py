"""RadGround's settings: one typed, immutable object read from a TOML file.

Precedence, highest first: values passed by the CLI, ``RADGROUND_*``
environment variables (nested with ``__``, e.g. ``RADGROUND_NODE__PORT=11113``),
the TOML file (``--config``, else ``$RADGROUND_CONFIG``, else
``config/radground.toml`` when it exists), then the defaults below.
``config/radground.toml`` documents every setting; a test keeps it equal to
these defaults. Unknown keys and bad values fail at start-up with a message
naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dicom_node.scp import AllowedPeer
from dicom_node.storage import DuplicatePolicy, FsyncPolicy

__all__ = [
    "CompletionSettings",
    "DatabaseSettings",
    "DicomDestination",
    "LoggingSettings",
    "NodeSettings",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "load_settings",
]

DEFAULT_CONFIG = Path("config/radground.toml")

AETitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]*[^ ][\x20-\x5b\x5d-\x7e]*$")]
Port = Annotated[int, Field(ge=0, le=65535)]


class SettingsError(Exception):
    """The settings are invalid; the message names each bad setting and says why."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AllowedPeerSettings(_Section):
    """A calling AE title allowed to send, optionally only from one host."""

    ae_title: AETitle
    host: str | None = None

    def to_peer(self) -> AllowedPeer:
        return AllowedPeer(ae_title=self.ae_title, host=self.host)


class NodeSettings(_Section):
    """The DICOM listener (Storage SCP)."""

    ae_title: AETitle = "RADGROUND"
    host: str = "127.0.0.1"
    port: Port = 11112
    listener_processes: int = Field(0, ge=0, le=64)
    max_associations: int = Field(16, ge=1, le=1000)
    require_called_ae_title: bool = True
    allowed_peers: tuple[AllowedPeerSettings, ...] = ()
    network_timeout_seconds: float = Field(60.0, gt=0)
    acse_timeout_seconds: float = Field(30.0, gt=0)
    dimse_timeout_seconds: float = Field(60.0, gt=0)
    max_pdu_size: int = Field(262_144, ge=0)

    def resolved_listener_processes(self) -> int:
        return self.listener_processes or (os.cpu_count() or 1)


class StorageSettings(_Section):
    """Where received instances are kept."""

    root: Path = Path("var/instances")
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    duplicates: DuplicatePolicy = DuplicatePolicy.IGNORE_IF_IDENTICAL
    reserve_mb: int = Field(1024, ge=0)


class DatabaseSettings(_Section):
    """The study index and job state."""

    url: str = "sqlite:///var/radground.db"

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class CompletionSettings(_Section):
    """When a study counts as complete."""

    idle_seconds: float = Field(30.0, gt=0)
    force_after_seconds: float = Field(600.0, gt=0)
    poll_seconds: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _force_after_idle(self) -> CompletionSettings:
        if self.force_after_seconds < self.idle_seconds:
            raise ValueError("force_after_seconds must be >= idle_seconds")
        return self


class DicomDestination(_Section):
    """A DICOM peer RadGround sends to (the PACS)."""

    ae_title: AETitle
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]


class LoggingSettings(_Section):
    """Log output (never patient data, at any level)."""

    level: str = "INFO"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value


class Settings(BaseSettings):
    """All of RadGround's settings (see ``config/radground.toml``)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="RADGROUND_",
        env_nested_delimiter="__",
    )

    node: NodeSettings = NodeSettings()
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    completion: CompletionSettings = CompletionSettings()
    destinations: dict[str, DicomDestination] = {}
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the settings (see the module docstring for precedence).

    Raises
    ------
    SettingsError
        A file given explicitly does not exist, or a value is invalid; the
        message names the setting (``node.port: …``).
    """
    explicit = config_file or os.environ.get("RADGROUND_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG
    if explicit and not path.is_file():
        raise SettingsError(f"config file {path} does not exist")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path if path.is_file() else None)

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(top level)"
            lines.append(f"  {where}: {error['msg']}")
        raise SettingsError(f"invalid settings (from {path}):\n" + "\n".join(lines)) from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"could not read {path}: {exc}") from None

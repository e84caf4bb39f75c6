"""What the node status and model pages show that the database does not know: the shell
(``radground``) hands these in through :class:`web.context.WebContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Listener", "ModelFile", "NodeProbe", "NodeRuntime"]


@dataclass(frozen=True)
class ModelFile:
    """A configured model (``[models.NAME]``): its backend and its file or directory."""

    name: str
    #: "onnx", "tensorrt" or "hf".
    backend: str
    path: Path


@dataclass(frozen=True)
class Listener:
    """A DICOM listener (Storage SCP) of the node."""

    ae_title: str
    host: str
    port: int
    alive: bool


@dataclass(frozen=True)
class NodeRuntime:
    """What the running node knows of itself; ``None`` where this process cannot know."""

    listeners: tuple[Listener, ...] | None = None
    #: DICOM associations open now.
    associations_open: int | None = None
    #: Celery workers that answered a ping ("celery@host").
    workers_answering: tuple[str, ...] | None = None


#: Asked on each node status request; it must answer quickly (no network waits).
NodeProbe = Callable[[], NodeRuntime]

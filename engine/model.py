"""The one interface every model backend implements.

A :class:`RegionAwareModel` takes prepared images (already decoded, windowed and
resized to the model's input size by :mod:`engine.pixels`) and returns raw text
in the MedRegA grounding grammar, one string per request. Parsing that text and
mapping boxes back to source pixels happens outside the backend, so every model,
the shipped CPU detector and a 40B VLM alike, goes through one parser.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import numpy as np

from engine.errors import EngineError
from engine.report import SUPPORTED_LANGUAGES, ModelInfo, Task

if TYPE_CHECKING:  # engine.applicability reads engine.pixels, which imports this module
    from engine.applicability import ApplicabilityRule

__all__ = ["GenerationRequest", "ModelError", "RegionAwareModel", "ResizeMode"]


class ModelError(EngineError, RuntimeError):
    """A model backend could not load or run."""


class ResizeMode(enum.StrEnum):
    """How source pixels are fitted into the model's input size."""

    #: Stretch to the input size, aspect ratio not kept (MedRegA/InternVL: 448 x 448).
    STRETCH = "stretch"
    #: Scale to fit keeping the aspect ratio, pad the rest (pad recorded in the transform).
    LETTERBOX = "letterbox"


@dataclass(frozen=True)
class GenerationRequest:
    """One image and what to ask the model about it.

    Parameters
    ----------
    image
        float32 array (height, width, 3), RGB in [0, 1], exactly the model's
        ``input_size``; normalisation (mean/std) is the backend's business.
    task
        What to do (grounded report, detection, text→region, ...).
    language
        BCP-47 tag of the language to answer in (the prompt's language).
    targets
        Objects to locate or organs to describe, in ``language``
        (e.g. the 12 Chest ImaGenome structures for a grounded chest report).
    regions
        Boxes in model coordinates 0–999 ``(x1, y1, x2, y2)`` to ask about
        (region→text, or the second pass of regional CoT).
    """

    image: np.ndarray
    task: Task
    language: str = "en"
    targets: tuple[str, ...] = ()
    regions: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        if (
            not isinstance(self.image, np.ndarray)
            or self.image.ndim != 3
            or self.image.shape[2] != 3
        ):
            raise ValueError(
                "GenerationRequest.image must be a (H, W, 3) array, got "
                f"{getattr(self.image, 'shape', None)}"
            )
        if self.image.dtype != np.float32:
            raise ValueError(f"GenerationRequest.image must be float32, got {self.image.dtype}")
        object.__setattr__(self, "task", Task(self.task))
        if self.language not in SUPPORTED_LANGUAGES:
            raise ValueError(f"GenerationRequest.language {self.language!r} is not supported")
        for box in self.regions:
            if len(box) != 4 or not all(0 <= int(v) <= 999 for v in box):
                raise ValueError(
                    f"GenerationRequest.regions must be 0-999 boxes (x1, y1, x2, y2), got {box!r}"
                )


class RegionAwareModel(abc.ABC):
    """A loaded model. One instance per worker process (created after fork).

    Attributes
    ----------
    info
        Name, version, manufacturer and device UID (new UID per version).
    input_size
        ``(width, height)`` of the images :meth:`generate` expects.
    resize_mode
        How :mod:`engine.pixels` must fit source images into ``input_size``.
    languages
        Languages the model can answer in.
    tasks
        Tasks the model supports.
    max_batch_size
        Largest batch :meth:`generate` accepts at once (the micro-batcher's cap).
    applicability
        The images the model is made for (:class:`engine.applicability.ApplicabilityRule`);
        ``None``: any image. :func:`engine.analyze.analyze_study` refuses the others.
    """

    info: ModelInfo
    input_size: tuple[int, int]
    resize_mode: ResizeMode = ResizeMode.STRETCH
    languages: tuple[str, ...] = ("en",)
    tasks: tuple[Task, ...] = (Task.GROUNDED_REPORT,)
    max_batch_size: int = 1
    applicability: ApplicabilityRule | None = None

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Run the model on a batch; one output text in the MedRegA grammar per request."""

    def check_request(self, request: GenerationRequest) -> None:
        """Raise :class:`ModelError` when this model cannot answer ``request``.

        The base checks the task and the language; a backend adds its own (the
        default detector: the names it can locate). Callers that share a batch
        with others (the micro-batcher) may call it first, so that one request
        the model cannot answer fails alone rather than with its batch.
        """
        if request.task not in self.tasks:
            raise ModelError(
                f"{self.info.name} does not do {request.task.value}; it does "
                f"{[t.value for t in self.tasks]}"
            )
        if request.language not in self.languages:
            raise ModelError(
                f"{self.info.name} answers in {self.languages}, not {request.language!r}"
            )

    def close(self) -> None:
        """Release the model's resources (GPU memory, sessions)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

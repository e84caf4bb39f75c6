"""ONNX Runtime backend: the shipped default detector (or any compatible ONNX file).

:class:`OnnxDetector` runs the CenterNet graph exported by
:mod:`engine.default_model.export`, decodes peaks into boxes with the numpy
code of :mod:`engine.default_model.decode` (one path for every batch size) and
writes MedRegA-grammar text (``engine.grammar``) with RadGround's ``<score>``
extension, one phrase per detection::

    <ref>nodule</ref><box>[[613, 200, 700, 287]]</box><score>0.82</score>: Nodule in the left upper
    zone.

Coordinates are integers 0–999 of the model input (``round(x / width * 999)``,
the inverse of MedRegA's ``/ 999``), the label and sentence come from
:mod:`engine.vocabulary` in the request's language, and the score is the
heatmap peak (the detector's own confidence). A study with nothing above the
threshold gets the vocabulary's explicit negative sentence.

The two region-centric tasks are answered from the same graph outputs
(:mod:`engine.backends.detector_regions`): region→text pools each reported
class's heatmap peaks inside the asked box (best first, with the score), and
text→region gives the best box of the named class (English or Chinese name).

The ONNX Runtime session is created lazily in the process that first runs the
model, and again if that process has forked since (sessions are not fork-safe,
and CUDA/TensorRT providers even less so), never at import.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.applicability import FRONTAL_CHEST_RADIOGRAPH
from engine.backends.detector_regions import (
    REGION_MIN_SCORE,
    Heads,
    UnknownTargetError,
    describe_region_text,
    known_target_names,
    locate_text,
    resolve_target,
)
from engine.default_model.config import CLASSES, INPUT_SIZE, ONNX_PATH
from engine.default_model.decode import DecodedImage, decode_batch
from engine.default_model.export import check_class_thresholds
from engine.default_model.metadata import MetadataError, parse_onnx_metadata
from engine.default_model.operating_points import (
    METADATA_KEY,
    OperatingPointError,
    OperatingPoints,
    parse_operating_points,
)
from engine.grammar import Box999, GroundedPhrase, RefBoxes, write_grounded_text
from engine.model import GenerationRequest, ModelError, RegionAwareModel, ResizeMode
from engine.report import ModelInfo, Task
from engine.vocabulary import chest_zone, entry, finding_sentence, scoped_negative_report

__all__ = ["DEFAULT_MODEL_NAME", "PROVIDERS", "OnnxDetector"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "radground-cxr-det"
#: Friendly provider names → ONNX Runtime execution providers.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
#: Score threshold when the ONNX metadata names none.
_FALLBACK_THRESHOLD = 0.3
#: Release of a model whose metadata names none (``model_release``); the
#: version is ``<release>+<first 12 hex digits of the file's SHA-256>``.
_FALLBACK_RELEASE = "1.0"


#: The region-centric tasks, answered from the heatmaps (:mod:`engine.backends.detector_regions`).
_REGION_TASKS = frozenset({Task.REGION_TO_TEXT, Task.TEXT_TO_REGION})


def _to_999(value: float, extent: int) -> int:
    return int(min(999, max(0, round(value / extent * 999))))


class OnnxDetector(RegionAwareModel):
    """The default chest-radiograph detector on ONNX Runtime.

    Parameters
    ----------
    path
        The ONNX file; the model shipped in :mod:`engine.default_model` by default.
    providers
        Execution providers in order of preference, by friendly name
        (``"cpu"``, ``"cuda"``, ``"tensorrt"``); CPU is always appended last.
        Asking for one this ONNX Runtime build lacks raises :class:`ModelError`
        when the session is created.
    score_threshold
        Minimum detector confidence to report, for every class; default: the
        operating points stored in the model's metadata, one per class
        (``class_score_thresholds``, see the card) and ``score_threshold`` for
        classes without one.
    intra_op_threads
        ONNX Runtime intra-op threads (``None``: its default, all cores).
    max_batch_size
        Largest batch run at once; larger request lists are split.
    """

    resize_mode = ResizeMode.STRETCH
    languages = ("en", "en-US", "en-GB", "zh-CN")
    tasks = (Task.GROUNDED_REPORT, Task.DETECTION, Task.REGION_TO_TEXT, Task.TEXT_TO_REGION)
    applicability = FRONTAL_CHEST_RADIOGRAPH

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        providers: Sequence[str] = ("cpu",),
        score_threshold: float | None = None,
        intra_op_threads: int | None = None,
        max_batch_size: int = 8,
        region_min_score: float = REGION_MIN_SCORE,
    ) -> None:
        self.path = Path(path) if path is not None else ONNX_PATH
        if not self.path.is_file():
            raise ModelError(f"ONNX model not found: {self.path}")
        unknown = [p for p in providers if p not in PROVIDERS]
        if unknown:
            raise ModelError(f"unknown providers {unknown}; choose from {sorted(PROVIDERS)}")
        if max_batch_size < 1:
            raise ModelError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if score_threshold is not None and not 0.0 < score_threshold < 1.0:
            raise ModelError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if not 0.0 < region_min_score < 1.0:
            raise ModelError(f"region_min_score must be in (0, 1), got {region_min_score}")
        self.region_min_score = region_min_score
        self.providers = tuple(dict.fromkeys([*providers, "cpu"]))
        self.intra_op_threads = intra_op_threads
        self.max_batch_size = max_batch_size
        self._requested_threshold = score_threshold
        import hashlib

        data = self.path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.sha256 = digest
        self.input_size = INPUT_SIZE
        try:
            self._metadata: dict[str, str] = parse_onnx_metadata(data, name=self.path.name)
        except MetadataError as exc:
            raise ModelError(str(exc)) from None
        del data
        self._class_thresholds = self._read_class_thresholds()
        self._operating_points = self._read_operating_points()
        release = (
            self._metadata.get("model_release", _FALLBACK_RELEASE).strip() or _FALLBACK_RELEASE
        )
        self.info = ModelInfo.for_version(
            name=DEFAULT_MODEL_NAME if self.path == ONNX_PATH else self.path.stem,
            version=f"{release}+{digest[:12]}",
            manufacturer="RadGround",
            parameters=self._reporting_statements(),
        )
        # an onnxruntime InferenceSession (untyped library), or a subclass's stand-in with run()
        self._session: Any = None
        self._session_pid: int | None = None
        self._lock = threading.Lock()

    # -- session ------------------------------------------------------------------

    def _ensure_session(self) -> Any:
        with self._lock:
            if self._session is not None and self._session_pid == os.getpid():
                return self._session
            import onnxruntime as ort

            available = set(ort.get_available_providers())
            wanted = [PROVIDERS[p] for p in self.providers]
            missing = [p for p in wanted if p not in available]
            if missing:
                raise ModelError(
                    f"execution providers {missing} are not in this onnxruntime build "
                    f"(available: {sorted(available)}); install onnxruntime-gpu for CUDA/TensorRT"
                )
            options = ort.SessionOptions()
            if self.intra_op_threads is not None:
                options.intra_op_num_threads = self.intra_op_threads
            try:
                session = ort.InferenceSession(
                    str(self.path), sess_options=options, providers=wanted
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelError(f"cannot load ONNX model {self.path.name}: {exc}") from exc
            self._check_metadata(session)
            self._session = session
            self._session_pid = os.getpid()
            logger.info(
                "loaded %s %s with %s",
                self.info.name,
                self.info.version,
                ", ".join(session.get_providers()),
            )
            return session

    def _check_metadata(self, session: Any) -> None:
        classes = self._metadata.get("classes")
        if classes is not None and tuple(json.loads(classes)) != CLASSES:
            raise ModelError(
                f"model classes {classes} differ from the vocabulary's NIH classes {CLASSES}"
            )
        shape = session.get_inputs()[0].shape
        if len(shape) != 4 or tuple(shape[2:]) != (self.input_size[1], self.input_size[0]):
            raise ModelError(
                f"model input shape {shape} does not match input size {self.input_size}"
            )

    def _read_class_thresholds(self) -> dict[str, float]:
        text = self._metadata.get("class_score_thresholds")
        if text is None:
            return {}
        try:
            return check_class_thresholds({str(k): float(v) for k, v in json.loads(text).items()})
        except (ValueError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"{self.path.name}: metadata class_score_thresholds {text[:80]!r} is "
                f"not usable ({exc}); "
                "re-export the model with valid per-class thresholds"
            ) from None

    def _read_operating_points(self) -> OperatingPoints | None:
        text = self._metadata.get(METADATA_KEY)
        if text is None:
            return None
        try:
            points = parse_operating_points(text)
        except OperatingPointError as exc:
            raise ModelError(
                f"{self.path.name}: metadata {exc}; re-export the model with valid operating points"
            ) from None
        stored = self._class_thresholds
        reported = {label: t for label, t in points.thresholds.items() if t is not None}
        if stored and stored != reported:
            raise ModelError(
                f"{self.path.name}: metadata class_score_thresholds {stored} contradicts "
                f"{METADATA_KEY}, which reports {reported or 'no class'}; keep one of them"
            )
        return points

    def _reporting_statements(self) -> tuple[str, ...]:
        points = self._operating_points
        if points is None:
            return ()
        reported = ", ".join(
            f"{p.label} (score >= {p.threshold:.2f})"
            for p in points.classes
            if p.threshold is not None
        )
        statements = [f"reported findings: {reported or 'none'}"]
        if points.unreported_classes:
            statements.append(f"not reported by this model: {', '.join(points.unreported_classes)}")
        return tuple(statements)

    @property
    def operating_points(self) -> OperatingPoints | None:
        """Which classes the model reports and their held-out counts (``None`` for a
        model exported without them: then every class is reported)."""
        return self._operating_points

    @property
    def reported_classes(self) -> tuple[str, ...]:
        """The classes this model ever emits, in :data:`CLASSES` order."""
        if self._operating_points is None:
            return CLASSES
        return self._operating_points.reported_classes

    @property
    def score_threshold(self) -> float:
        """The reporting threshold for classes without their own (explicit, else from the
        metadata)."""
        if self._requested_threshold is not None:
            return self._requested_threshold
        return float(self._metadata.get("score_threshold", _FALLBACK_THRESHOLD))

    @property
    def stored_class_thresholds(self) -> dict[str, float]:
        """The per-class thresholds stored in the model for the classes it reports
        (empty when it stores none)."""
        if self._operating_points is not None:
            return {
                label: t for label, t in self._operating_points.thresholds.items() if t is not None
            }
        return dict(self._class_thresholds)

    @property
    def class_score_thresholds(self) -> dict[str, float]:
        """The reporting threshold of each reported class, in :data:`CLASSES` order.

        An explicit ``score_threshold`` applies to every reported class;
        otherwise each class has the operating point stored for it in the model
        (chosen on the tuning patients, see the card), or the model's
        ``score_threshold``. Classes the model does not report are absent.
        """
        if self._requested_threshold is not None:
            return dict.fromkeys(self.reported_classes, self._requested_threshold)
        stored = self.stored_class_thresholds
        return {label: stored.get(label, self.score_threshold) for label in self.reported_classes}

    def load(self) -> OnnxDetector:
        """Create the session now (in this process) instead of at the first call."""
        self._ensure_session()
        return self

    def close(self) -> None:
        with self._lock:
            self._session = None
            self._session_pid = None

    # -- inference ----------------------------------------------------------------

    def _batch_array(self, images: Sequence[np.ndarray]) -> np.ndarray:
        width, height = self.input_size
        batch = np.empty((len(images), 3, height, width), dtype=np.float32)
        for i, image in enumerate(images):
            if image.shape != (height, width, 3):
                raise ModelError(
                    f"image {i} has shape {image.shape}, the model needs {(height, width, 3)}"
                )
            # trained on grayscale radiographs replicated to 3 channels: feed the luminance
            batch[i] = np.clip(image.mean(axis=2), 0.0, 1.0)[None]
        return batch

    def detect(
        self,
        images: Sequence[np.ndarray],
        *,
        score_threshold: float | None = None,
        include_unreported: bool = False,
    ) -> list[DecodedImage]:
        """Boxes in model-input pixels, scores and class indices for each image.

        Parameters
        ----------
        images
            float32 (height, width, 3) arrays in [0, 1] at :attr:`input_size`.
        score_threshold
            Override the reporting thresholds with one for every class (e.g. a
            low one for mAP).
        include_unreported
            Also decode the classes the model does not report (at
            ``score_threshold`` or the constructor's, else at their tuning
            threshold): for evaluation only; :meth:`generate` never does.
        """
        session = self._ensure_session()
        points = self._operating_points
        if score_threshold is None:
            score_threshold = self._requested_threshold
        if include_unreported:
            emit = np.ones(len(CLASSES), dtype=bool)
            if score_threshold is not None:
                threshold: float | np.ndarray = score_threshold
            elif points is not None:
                threshold = np.asarray(
                    [p.tuning_threshold for p in points.classes], dtype=np.float32
                )
            else:
                threshold = np.asarray(list(self.class_score_thresholds.values()), dtype=np.float32)
        else:
            reported = set(self.reported_classes)
            emit = np.asarray([label in reported for label in CLASSES], dtype=bool)
            per_class = self.class_score_thresholds if score_threshold is None else dict.fromkeys(
                self.reported_classes, score_threshold
            )
            threshold = np.asarray(
                [per_class.get(label, 1.0) for label in CLASSES], dtype=np.float32
            )
        results: list[DecodedImage] = []
        for heat, size, offset in self._run_graph(session, images):
            results.extend(
                decode_batch(
                    heat,
                    size,
                    offset,
                    input_size=self.input_size,
                    score_threshold=threshold,
                    emit_classes=emit,
                )
            )
        return results

    def _run_graph(
        self, session: Any, images: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The graph's (heatmap, size, offset) outputs, one tuple per chunk of
        ``max_batch_size`` images."""
        outputs = []
        for start in range(0, len(images), self.max_batch_size):
            batch = self._batch_array(images[start : start + self.max_batch_size])
            heat, size, offset = session.run(None, {session.get_inputs()[0].name: batch})
            outputs.append((np.asarray(heat), np.asarray(size), np.asarray(offset)))
        return outputs

    def heads(self, images: Sequence[np.ndarray]) -> list[Heads]:
        """The graph's outputs for each image (peak-suppressed heatmap, size, offset)."""
        session = self._ensure_session()
        return [
            Heads(heatmap=heat[i], size=size[i], offset=offset[i])
            for heat, size, offset in self._run_graph(session, images)
            for i in range(heat.shape[0])
        ]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One MedRegA-grammar text per request (see the module docstring)."""
        for request in requests:
            self.check_request(request)
        # The detector's boxes do not depend on the language: an image asked for in several
        # languages (the same array object, as analyze_study passes it) is detected once.
        reports = [r for r in requests if r.task not in _REGION_TASKS]
        unique = {id(r.image): r.image for r in reports}
        detections = dict(zip(unique, self.detect(list(unique.values())), strict=True))
        regional = {id(r.image): r.image for r in requests if r.task in _REGION_TASKS}
        heads = dict(zip(regional, self.heads(list(regional.values())), strict=True))
        return [
            self._answer_region_task(heads[id(r.image)], r)
            if r.task in _REGION_TASKS
            else self._write(detections[id(r.image)], r.language)
            for r in requests
        ]

    def check_request(self, request: GenerationRequest) -> None:
        """The base checks, then the region tasks' arguments: region→text needs a region,
        text→region a target naming one of the detector's classes (English or Chinese
        name, or a synonym the vocabulary knows; :class:`ModelError` lists the names)."""
        super().check_request(request)
        if request.task is Task.REGION_TO_TEXT:
            if not request.regions:
                raise ModelError("region_to_text needs the region to describe (0-999 box)")
            for x1, y1, x2, y2 in request.regions:
                if x2 <= x1 or y2 <= y1:
                    raise ModelError(
                        f"region {[x1, y1, x2, y2]} has no area (x1 < x2 and y1 < y2 needed)"
                    )
        if request.task is Task.TEXT_TO_REGION:
            if not request.targets:
                raise ModelError(
                    "text_to_region needs the finding to locate; ask for one of: "
                    + ", ".join(known_target_names())
                )
            for target in request.targets:
                try:
                    resolve_target(target)
                except UnknownTargetError as exc:
                    raise ModelError(f"{self.info.name} cannot locate {exc}") from None

    def _answer_region_task(self, heads: Heads, request: GenerationRequest) -> str:
        thresholds = self.class_score_thresholds
        if request.task is Task.REGION_TO_TEXT:
            regions = [Box999(*(int(v) for v in box)) for box in request.regions]
            return describe_region_text(
                heads,
                regions,
                input_size=self.input_size,
                thresholds=thresholds,
                language=request.language,
                min_score=self.region_min_score,
            )
        return locate_text(
            heads,
            request.targets,
            input_size=self.input_size,
            thresholds=thresholds,
            language=request.language,
            min_score=self.region_min_score,
        )

    def negative_report(self, language: str) -> str:
        """The sentence of an image with nothing found: which reported findings were not
        found and which findings this model does not report (never a bare "normal")."""
        reported = [label.lower() for label in self.reported_classes]
        unreported = [label.lower() for label in CLASSES if label not in self.reported_classes]
        return scoped_negative_report(
            reported, unreported, language="zh-CN" if language.startswith("zh") else "en"
        )

    def _write(self, decoded: DecodedImage, language: str) -> str:
        width, height = self.input_size
        phrases = []
        for box, score, cls in zip(decoded.boxes, decoded.scores, decoded.classes, strict=True):
            key = CLASSES[int(cls)].lower()
            x1, y1, x2, y2 = (float(v) for v in box)
            b = [_to_999(x1, width), _to_999(y1, height), _to_999(x2, width), _to_999(y2, height)]
            if b[2] <= b[0] or b[3] <= b[1]:
                continue  # below one 0-999 step: nothing to draw
            zone = chest_zone(min(1.0, (x1 + x2) / 2 / width), min(1.0, (y1 + y2) / 2 / height))
            phrases.append(
                GroundedPhrase(
                    refs=(
                        RefBoxes(
                            entry(key).name(language), (Box999(*b),), (round(float(score), 2),)
                        ),
                    ),
                    description=finding_sentence(key, language=language, zone=zone),
                )
            )
        if not phrases:
            phrases.append(GroundedPhrase(refs=(), description=self.negative_report(language)))
        return write_grounded_text(phrases, language=language)

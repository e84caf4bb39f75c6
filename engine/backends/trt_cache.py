"""On-disk cache of TensorRT engines, keyed by what makes an engine valid.

A serialized TensorRT engine only runs on the TensorRT version that built it
and is tuned for one GPU model; its precision and optimisation profile are baked
in. The cache key is therefore: the ONNX file's SHA-256 (and of its external
data files), the TensorRT version, the GPU (name and compute capability), the
precision and the profile's batch range. Each engine ``<stem>-<key>.engine`` has
a JSON sidecar with that metadata; an engine whose sidecar does not match what
this worker needs is refused with a message saying what differs, and rebuilt.

Pure Python: nothing here imports TensorRT or touches a GPU.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.model import ModelError

__all__ = [
    "EngineCache",
    "EngineKey",
    "EngineMismatchError",
    "GpuIdentity",
    "Precision",
    "TensorRTError",
    "onnx_sha256",
]

logger = logging.getLogger(__name__)

#: Bump when the sidecar layout changes.
METADATA_FORMAT = 1


class TensorRTError(ModelError):
    """A TensorRT engine could not be built, loaded or run."""


class EngineMismatchError(TensorRTError):
    """A cached engine was built for another TensorRT, GPU, precision or ONNX file."""


class Precision(enum.StrEnum):
    """Engine precision.

    ``fp16``/``int8`` are builder flags on TensorRT 10; TensorRT 11 has only
    strongly typed networks, where the ONNX graph itself must carry the
    precision (float16 tensors, or Q/DQ nodes for int8). ``strongly_typed``
    takes the precision from the graph on either version.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    STRONGLY_TYPED = "strongly_typed"


@dataclass(frozen=True)
class GpuIdentity:
    """The GPU an engine is tuned for: device name and compute capability."""

    name: str
    compute_capability: tuple[int, int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TensorRTError(f"GpuIdentity.name must be a non-empty string, got {self.name!r}")
        major, minor = (int(v) for v in self.compute_capability)
        object.__setattr__(self, "compute_capability", (major, minor))

    def __str__(self) -> str:
        return f"{self.name} (sm_{self.compute_capability[0]}{self.compute_capability[1]})"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on.

    Parameters
    ----------
    onnx_sha256
        SHA-256 of the ONNX file and its external data (:func:`onnx_sha256`).
    tensorrt_version
        ``tensorrt.__version__`` of the builder.
    gpu
        The GPU it is built on (engines are not portable across GPU models).
    precision
        :class:`Precision`.
    min_batch_size, opt_batch_size, max_batch_size
        The optimisation profile's batch range.
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu: GpuIdentity
    precision: Precision
    min_batch_size: int = 1
    opt_batch_size: int = 1
    max_batch_size: int = 1

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise TensorRTError(
                f"EngineKey.onnx_sha256 must be a hex SHA-256, got {self.onnx_sha256!r}"
            )
        if not self.tensorrt_version:
            raise TensorRTError("EngineKey.tensorrt_version must not be empty")
        object.__setattr__(self, "precision", Precision(self.precision))
        if not 1 <= self.min_batch_size <= self.opt_batch_size <= self.max_batch_size:
            raise TensorRTError(
                "EngineKey batch sizes must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_batch_size}, {self.opt_batch_size}, {self.max_batch_size}"
            )

    def as_metadata(self) -> dict[str, Any]:
        """The sidecar JSON content."""
        data = asdict(self)
        data["gpu"] = {
            "name": self.gpu.name,
            "compute_capability": list(self.gpu.compute_capability),
        }
        data["precision"] = self.precision.value
        data["format"] = METADATA_FORMAT
        return data

    def digest(self) -> str:
        """A short stable hash of the key (part of the engine's file name)."""
        text = json.dumps(self.as_metadata(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """Human-readable reasons why an engine with ``stored`` metadata cannot serve this key."""
        reasons = []
        if stored.get("format") != METADATA_FORMAT:
            reasons.append(f"metadata format {stored.get('format')!r}, expected {METADATA_FORMAT}")
        if stored.get("tensorrt_version") != self.tensorrt_version:
            reasons.append(
                f"built with TensorRT {stored.get('tensorrt_version')}, this worker "
                f"runs TensorRT {self.tensorrt_version}"
            )
        gpu = stored.get("gpu") or {}
        stored_gpu = (gpu.get("name"), tuple(gpu.get("compute_capability") or ()))
        if stored_gpu != (self.gpu.name, self.gpu.compute_capability):
            cc = stored_gpu[1]
            shown = (
                f"{stored_gpu[0]} (sm_{''.join(str(v) for v in cc)})" if cc else str(stored_gpu[0])
            )
            reasons.append(f"built for GPU {shown}, this worker has {self.gpu}")
        if stored.get("precision") != self.precision.value:
            reasons.append(
                f"built at precision {stored.get('precision')}, {self.precision.value} requested"
            )
        if stored.get("onnx_sha256") != self.onnx_sha256:
            reasons.append(
                f"built from ONNX {str(stored.get('onnx_sha256'))[:12]}..., the model "
                f"file is now {self.onnx_sha256[:12]}..."
            )
        profile = [stored.get(k) for k in ("min_batch_size", "opt_batch_size", "max_batch_size")]
        if profile != [self.min_batch_size, self.opt_batch_size, self.max_batch_size]:
            reasons.append(
                f"batch profile {profile}, requested "
                f"{[self.min_batch_size, self.opt_batch_size, self.max_batch_size]}"
            )
        return reasons


def _external_data_files(onnx_path: Path) -> list[Path]:
    """Files the ONNX model keeps its large tensors in (``external_data`` locations)."""
    try:
        import onnx
    except ImportError:
        return []
    model = onnx.load(str(onnx_path), load_external_data=False)
    locations: set[str] = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                locations.add(entry.value)
    return [onnx_path.parent / name for name in sorted(locations)]


def onnx_sha256(onnx_path: str | Path) -> str:
    """SHA-256 over the ONNX file and, in name order, its external data files."""
    path = Path(onnx_path)
    if not path.is_file():
        raise TensorRTError(f"ONNX file {path} does not exist")
    digest = hashlib.sha256()
    for file in [path, *_external_data_files(path)]:
        if not file.is_file():
            raise TensorRTError(f"external data file {file.name} of {path.name} is missing")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EngineCache:
    """A directory of engines and timing caches.

    Several worker processes may share it: files are written atomically
    (temporary file + rename), so a reader sees a whole engine or none.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)

    def engine_path(self, key: EngineKey, *, stem: str = "model") -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "model"
        return self.cache_dir / f"{safe}-{key.digest()}.engine"

    @staticmethod
    def metadata_path(engine_path: Path) -> Path:
        return engine_path.with_suffix(".json")

    def timing_cache_path(self, *, tensorrt_version: str, gpu: GpuIdentity) -> Path:
        """One timing cache per TensorRT version and GPU model (tactic timings are device
        specific)."""
        slug = re.sub(r"[^A-Za-z0-9]+", "_", gpu.name).strip("_").lower()
        cc = f"sm{gpu.compute_capability[0]}{gpu.compute_capability[1]}"
        return self.cache_dir / f"timing-trt{tensorrt_version}-{slug}-{cc}.cache"

    def read_metadata(self, engine_path: Path) -> dict[str, Any] | None:
        sidecar = self.metadata_path(engine_path)
        try:
            return json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            logger.warning(
                "engine metadata %s is unreadable; the engine will be rebuilt", sidecar.name
            )
            return None

    def verify(self, engine_path: Path, key: EngineKey) -> None:
        """Raise :class:`EngineMismatchError` unless ``engine_path`` was built for ``key``."""
        if not engine_path.is_file():
            raise EngineMismatchError(f"engine {engine_path.name} does not exist")
        stored = self.read_metadata(engine_path)
        if stored is None:
            raise EngineMismatchError(
                f"engine {engine_path.name} has no readable metadata; its origin is unknown"
            )
        reasons = key.differences(stored)
        if reasons:
            raise EngineMismatchError(
                f"engine {engine_path.name} cannot be used: " + "; ".join(reasons)
            )

    def lookup(self, key: EngineKey, *, stem: str = "model") -> Path | None:
        """The cached engine for ``key``, or ``None`` when it must be (re)built."""
        path = self.engine_path(key, stem=stem)
        if not path.exists():
            return None
        try:
            self.verify(path, key)
        except EngineMismatchError as exc:
            logger.warning("%s; rebuilding", exc)
            return None
        return path

    def store(self, key: EngineKey, engine_bytes: bytes, *, stem: str = "model") -> Path:
        """Write an engine and its metadata sidecar; returns the engine's path."""
        if not engine_bytes:
            raise TensorRTError("refusing to cache an empty engine")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.engine_path(key, stem=stem)
        _atomic_write(path, bytes(engine_bytes))
        _atomic_write(
            self.metadata_path(path),
            json.dumps(key.as_metadata(), indent=2, sort_keys=True).encode(),
        )
        logger.info("cached TensorRT engine %s (%d bytes)", path.name, len(engine_bytes))
        return path

    def read_timing_cache(self, *, tensorrt_version: str, gpu: GpuIdentity) -> bytes:
        path = self.timing_cache_path(tensorrt_version=tensorrt_version, gpu=gpu)
        return path.read_bytes() if path.is_file() else b""

    def write_timing_cache(self, data: bytes, *, tensorrt_version: str, gpu: GpuIdentity) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.timing_cache_path(tensorrt_version=tensorrt_version, gpu=gpu)
        _atomic_write(path, bytes(data))
        return path

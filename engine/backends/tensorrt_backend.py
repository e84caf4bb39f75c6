"""Native TensorRT: build engines from ONNX, cache them, run them with ``execute_async_v3``.

Written against the TensorRT 10/11 Python API:

- networks are always explicit batch (no ``EXPLICIT_BATCH`` flag since 10.0);
- precision: on TensorRT 10, ``fp16``/``int8`` set ``BuilderFlag.FP16``/``INT8``
  (weak typing; INT8 with an entropy calibrator or Q/DQ nodes in the graph).
  TensorRT 11 removed those flags: networks are strongly typed and the ONNX
  graph must already carry the precision (convert it with ModelOpt AutoCast
  for fp16, quantize it with Q/DQ nodes for int8). Which API is present is
  detected from the module (``hasattr(trt.BuilderFlag, "FP16")``), not from
  the version string. ``strongly_typed`` takes the graph's precision on both;
- one optimisation profile with a dynamic batch axis (min 1, opt, max);
- a timing cache per TensorRT version and GPU model speeds up rebuilds;
- inference binds device buffers by tensor name (``set_input_shape``,
  ``set_tensor_address``) and enqueues on a CUDA stream (``execute_async_v3``).

Running engines lives in :mod:`engine.backends.trt_runtime`. Engines are cached
on disk (:mod:`engine.backends.trt_cache`) keyed by ONNX hash,
TensorRT version, GPU and precision; an engine built for anything else is
refused with the reason and rebuilt.

CUDA is not fork-safe: nothing here touches TensorRT or CUDA at import time or
in a constructor. Engines load on first use in the process that uses them (and
again after a fork, detected by the process id). TensorRT, and torch for device
memory and streams, are imported lazily; neither is installable everywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.backends import trt_runtime
from engine.backends.onnxruntime_backend import OnnxDetector
from engine.backends.trt_cache import (
    EngineCache,
    EngineKey,
    EngineMismatchError,
    Precision,
    TensorRTError,
    onnx_sha256,
)
from engine.backends.trt_runtime import (
    TensorBinding,
    TensorRTEngine,
    TensorRTVisionEmbedder,
    import_tensorrt,
)
from engine.report import ModelInfo

__all__ = [
    "EngineMismatchError",
    "Precision",
    "TensorBinding",
    "TensorRTDetector",
    "TensorRTEngine",
    "TensorRTError",
    "TensorRTVisionEmbedder",
    "build_engine",
    "make_int8_calibrator",
    "profile_shapes",
]

logger = logging.getLogger(__name__)

#: Default builder workspace (bytes).
DEFAULT_WORKSPACE = 4 << 30

def has_weak_typing(trt: ModuleType) -> bool:
    """Whether this TensorRT still has precision builder flags (10.x) or only strong typing
    (11+)."""
    return hasattr(trt.BuilderFlag, "FP16")


def profile_shapes(
    shape: Sequence[int], *, max_batch_size: int, opt_batch_size: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(min, opt, max)`` shapes of an optimisation profile for an input of ``shape``.

    Only the batch axis (0) may be dynamic (``-1``); its range is
    ``1 .. max_batch_size`` with ``opt_batch_size`` (default: the maximum) as the
    shape TensorRT tunes for. A fixed batch axis must fit ``max_batch_size``.
    """
    dims = tuple(int(d) for d in shape)
    if not dims:
        raise TensorRTError("a scalar input has no batch axis")
    if any(d < 0 for d in dims[1:]):
        raise TensorRTError(
            f"input shape {dims} has dynamic non-batch axes; export with a fixed image size"
        )
    if max_batch_size < 1:
        raise TensorRTError(f"max_batch_size must be >= 1, got {max_batch_size}")
    opt = max_batch_size if opt_batch_size is None else opt_batch_size
    if not 1 <= opt <= max_batch_size:
        raise TensorRTError(f"opt_batch_size must be in 1..{max_batch_size}, got {opt}")
    if dims[0] >= 0:
        if dims[0] != max_batch_size:
            raise TensorRTError(
                f"input has a fixed batch of {dims[0]}, max_batch_size is {max_batch_size}; "
                "export the ONNX with a dynamic batch axis"
            )
        return dims, dims, dims
    rest = dims[1:]
    return (1, *rest), (opt, *rest), (max_batch_size, *rest)


def onnx_input_shapes(onnx_path: str | Path) -> dict[str, tuple[int, ...]]:
    """The graph inputs (initializers excluded) and their shapes; ``-1`` for a symbolic axis."""
    try:
        import onnx
    except ImportError as exc:
        raise TensorRTError(
            "building TensorRT engines needs the onnx package (the 'gpu' extra)"
        ) from exc
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    shapes = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    return shapes


def _graph_precision(onnx_path: Path) -> tuple[bool, bool]:
    """``(has float16 tensors, has Q/DQ nodes)`` of an ONNX graph."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    fp16 = onnx.TensorProto.FLOAT16
    has_fp16 = any(t.data_type == fp16 for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == fp16
        for v in [*graph.input, *graph.output, *graph.value_info]
    )
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    return has_fp16, has_qdq


def _configure_precision(
    trt: ModuleType,
    config: Any,
    precision: Precision,
    onnx_path: Path,
    calibrator: Any,
    profile: Any,
) -> int:
    """Set precision flags on ``config``; returns the network creation flags."""
    weak = has_weak_typing(trt)
    if precision is Precision.STRONGLY_TYPED:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if weak else 0
    if precision is Precision.FP32:
        if hasattr(trt.BuilderFlag, "TF32"):  # on by default: 10-bit mantissa matmuls are not fp32
            config.clear_flag(trt.BuilderFlag.TF32)
        return 0
    has_fp16, has_qdq = _graph_precision(onnx_path)
    if not weak:  # TensorRT 11+: the graph must carry the precision
        if calibrator is not None:
            raise TensorRTError(
                "TensorRT 11 has no INT8 calibration; quantize the ONNX with Q/DQ nodes (ModelOpt)"
            )
        if precision is Precision.FP16 and not has_fp16:
            raise TensorRTError(
                f"TensorRT {trt.__version__} builds strongly typed networks only and "
                f"{onnx_path.name} has no "
                "float16 tensors; convert it first (ModelOpt AutoCast, "
                "keep_io_types=True) or ask for fp32"
            )
        if precision is Precision.INT8 and not has_qdq:
            raise TensorRTError(
                f"TensorRT {trt.__version__} needs explicit quantization for int8: "
                f"{onnx_path.name} has no Q/DQ nodes"
            )
        return 0
    config.set_flag(trt.BuilderFlag.FP16)
    if precision is Precision.INT8:
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator
            config.set_calibration_profile(profile)
        elif not has_qdq:
            raise TensorRTError(f"int8 needs a calibrator or Q/DQ nodes in {onnx_path.name}")
    return 0


def build_engine(
    onnx_path: str | Path,
    *,
    cache_dir: str | Path,
    precision: Precision | str = Precision.FP16,
    max_batch_size: int = 8,
    opt_batch_size: int | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    calibrator: Any = None,
    device: int = 0,
    rebuild: bool = False,
) -> Path:
    """Build (or find in the cache) a TensorRT engine for ``onnx_path``; returns its path.

    Parameters
    ----------
    onnx_path
        The ONNX model (batch axis dynamic or equal to ``max_batch_size``).
    cache_dir
        Engine cache directory (engines, metadata sidecars, timing caches).
    precision
        :class:`Precision` (``"fp32"``, ``"fp16"``, ``"int8"``, ``"strongly_typed"``).
    max_batch_size, opt_batch_size
        The optimisation profile's batch range (min is 1; opt defaults to max).
    workspace_bytes
        Builder workspace memory pool limit.
    calibrator
        TensorRT 10 only: an ``IInt8Calibrator`` for implicit INT8.
    device
        CUDA device the engine is built (and tuned) on.
    rebuild
        Build even if a matching engine is cached.
    """
    trt = import_tensorrt()
    path = Path(onnx_path)
    precision = Precision(precision)
    digest = onnx_sha256(path)
    profiles = {
        name: profile_shapes(shape, max_batch_size=max_batch_size, opt_batch_size=opt_batch_size)
        for name, shape in onnx_input_shapes(path).items()
    }
    if not profiles:
        raise TensorRTError(f"{path.name} has no inputs")
    low, opt, high = next(iter(profiles.values()))
    gpu = trt_runtime.current_gpu(device)
    key = EngineKey(digest, trt.__version__, gpu, precision, low[0], opt[0], high[0])
    cache = EngineCache(cache_dir)
    if not rebuild:
        cached = cache.lookup(key, stem=path.stem)
        if cached is not None:
            logger.info("using cached TensorRT engine %s", cached.name)
            return cached

    builder_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(builder_logger)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profiles.items():
        profile.set_shape(name, low, opt, high)
    flags = _configure_precision(trt, config, precision, path, calibrator, profile)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, builder_logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {path.name}: {errors}")
    parsed = {network.get_input(i).name for i in range(network.num_inputs)}
    if parsed != set(profiles):
        raise TensorRTError(
            f"TensorRT sees inputs {sorted(parsed)}, the ONNX graph declares {sorted(profiles)}"
        )
    config.add_optimization_profile(profile)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    timing = config.create_timing_cache(
        cache.read_timing_cache(tensorrt_version=trt.__version__, gpu=gpu)
    )
    config.set_timing_cache(timing, False)

    logger.info(
        "building TensorRT %s engine for %s (%s, batch %s) on %s",
        trt.__version__,
        path.name,
        precision,
        (key.min_batch_size, key.opt_batch_size, key.max_batch_size),
        gpu,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(
            f"TensorRT failed to build an engine for {path.name} (see the TensorRT log above)"
        )
    cache.write_timing_cache(
        bytes(config.get_timing_cache().serialize()), tensorrt_version=trt.__version__, gpu=gpu
    )
    return cache.store(key, bytes(serialized), stem=path.stem)


def make_int8_calibrator(
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    cache_file: str | Path,
    device: int = 0,
    device_backend: Callable[[int], Any] | None = None,
) -> Any:
    """An entropy calibrator (``IInt8EntropyCalibrator2``) for implicit INT8 on TensorRT 10.

    Parameters
    ----------
    batches
        Representative inputs, one mapping ``input name → array`` per batch, all
        with the same batch size (a few hundred images from the deployment site).
    cache_file
        Calibration table: read instead of calibrating when present, written after.
    device
        CUDA device for the batches' buffers.
    device_backend
        Factory of the buffer/stream helper (tests pass a host-memory stand-in).
    """
    trt = import_tensorrt()
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise TensorRTError(
            f"TensorRT {trt.__version__} has no INT8 calibration; use Q/DQ nodes in the ONNX graph"
        )
    iterator = iter(batches)
    path = Path(cache_file)
    backend = (device_backend or trt_runtime.TorchCuda)(device)

    first = next(iterator, None)
    if first is None and not path.is_file():
        raise TensorRTError(
            "INT8 calibration needs at least one batch (or an existing calibration cache)"
        )
    sizes = {int(a.shape[0]) for a in (first or {}).values()}
    if len(sizes) > 1:
        raise TensorRTError(f"calibration inputs disagree on the batch size: {sorted(sizes)}")
    batch_size = sizes.pop() if sizes else 1

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self._pending = first
            self._held: list[Any] = []

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            batch = self._pending if self._pending is not None else next(iterator, None)
            self._pending = None
            if batch is None:
                return None
            if set(names) - set(batch):
                raise TensorRTError(
                    f"calibration batch lacks inputs {sorted(set(names) - set(batch))}"
                )
            self._held = []
            pointers = []
            for name in names:
                array = np.ascontiguousarray(batch[name])
                if array.shape[0] != batch_size:
                    raise TensorRTError(
                        f"calibration batch of {array.shape[0]} for {name!r}, expected {batch_size}"
                    )
                handle, address = backend.upload(array)
                self._held.append(handle)
                pointers.append(address)
            backend.synchronize()
            return pointers

        def read_calibration_cache(self) -> bytes | None:
            return path.read_bytes() if path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(cache))

    return _Calibrator()


class _EngineSession:
    """The slice of ``onnxruntime.InferenceSession`` that :class:`OnnxDetector` uses, over an
    engine."""

    def __init__(
        self,
        engine: TensorRTEngine,
        *,
        input_names: Sequence[str],
        input_shapes: Sequence[Any],
        output_names: Sequence[str],
    ) -> None:
        self.engine = engine
        self._inputs = [_NodeArg(n, s) for n, s in zip(input_names, input_shapes, strict=True)]
        self.output_names = list(output_names)

    def get_inputs(self) -> list[_NodeArg]:
        return self._inputs

    def run(
        self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        outputs = self.engine.run(feed)
        return [outputs[name] for name in (output_names or self.output_names)]


@dataclass(frozen=True)
class _NodeArg:
    name: str
    shape: Any


class TensorRTDetector(OnnxDetector):
    """The default detector's ONNX served by a native TensorRT engine.

    Pre- and post-processing (luminance input, heatmap decoding, MedRegA
    grammar) are :class:`~engine.backends.onnxruntime_backend.OnnxDetector`'s;
    only the session is replaced by an engine built (or found) in ``cache_dir``
    when the worker first runs it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | Path,
        precision: Precision | str = Precision.FP16,
        max_batch_size: int = 8,
        score_threshold: float | None = None,
        device: int = 0,
    ) -> None:
        super().__init__(
            path, providers=("cpu",), score_threshold=score_threshold, max_batch_size=max_batch_size
        )
        self.cache_dir = Path(cache_dir)
        self.precision = Precision(precision)
        self.device = device
        self.info = ModelInfo.for_version(
            name=self.info.name,
            version=f"{self.info.version}+trt-{self.precision.value}",
            manufacturer=self.info.manufacturer,
            parameters=self.info.parameters,
        )

    def _engine(self) -> TensorRTEngine:
        engine_path = build_engine(
            self.path,
            cache_dir=self.cache_dir,
            precision=self.precision,
            max_batch_size=self.max_batch_size,
            device=self.device,
        )
        return TensorRTEngine(engine_path, device=self.device)

    def _ensure_session(self) -> Any:
        with self._lock:
            if self._session is not None and self._session_pid == os.getpid():
                return self._session
            import onnxruntime as ort

            # the ONNX graph's names, output order and metadata (read on the CPU)
            reference = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            inputs = reference.get_inputs()
            session = _EngineSession(
                self._engine().load(),
                input_names=[i.name for i in inputs],
                input_shapes=[i.shape for i in inputs],
                output_names=[o.name for o in reference.get_outputs()],
            )
            self._metadata = dict(reference.get_modelmeta().custom_metadata_map)
            self._check_metadata(session)
            self._session = session
            self._session_pid = os.getpid()
            logger.info(
                "serving %s %s with TensorRT (%s)",
                self.info.name,
                self.info.version,
                self.precision,
            )
            return session

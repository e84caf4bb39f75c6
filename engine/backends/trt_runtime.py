"""Running serialized TensorRT engines: I/O bookkeeping, device buffers, ``execute_async_v3``.

An engine is loaded lazily in the process that runs it, and again after a fork
(CUDA contexts do not survive ``fork``): nothing here touches TensorRT or CUDA
at import time or in a constructor. Before deserializing, the engine's metadata
sidecar (:mod:`engine.backends.trt_cache`) is checked against this process's
TensorRT version and GPU; a mismatch is refused with the reason.

Inference binds buffers by tensor name: ``set_input_shape`` for every input,
``get_tensor_shape`` for the outputs' resulting shapes, ``set_tensor_address``
for all of them, then ``execute_async_v3`` on a CUDA stream. Device memory and
the stream come from torch (imported lazily).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.backends.trt_cache import (
    EngineCache,
    EngineKey,
    EngineMismatchError,
    GpuIdentity,
    TensorRTError,
)

__all__ = [
    "TensorBinding",
    "TensorRTEngine",
    "TensorRTVisionEmbedder",
    "current_gpu",
    "engine_bindings",
    "import_tensorrt",
]

logger = logging.getLogger(__name__)

_NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a :class:`TensorRTError` saying where to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTError(
            "TensorRT is not installed; run GPU workers in NVIDIA's TensorRT container image "
            "(see docker-compose.yml) or install it from NVIDIA's package index"
        ) from exc
    return tensorrt


def current_gpu(device: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``device`` (creates a CUDA context: call after
    fork)."""
    try:
        import torch
    except ImportError as exc:
        raise TensorRTError("the TensorRT backend uses torch for CUDA devices and streams") from exc
    if not torch.cuda.is_available():
        raise TensorRTError("no CUDA device is available to this process")
    props = torch.cuda.get_device_properties(device)
    return GpuIdentity(props.name, (props.major, props.minor))


@dataclass(frozen=True)
class TensorBinding:
    """One I/O tensor of an engine: name, direction, numpy dtype, engine shape (``-1``: dynamic)."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]


def engine_bindings(trt: ModuleType, engine: Any) -> tuple[TensorBinding, ...]:
    """The engine's I/O tensors in engine order (``num_io_tensors`` / ``get_tensor_*``)."""
    bindings = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        trt_dtype = engine.get_tensor_dtype(name)
        np_dtype = _NUMPY_DTYPES.get(getattr(trt_dtype, "name", str(trt_dtype)))
        if np_dtype is None:
            raise TensorRTError(
                f"engine tensor {name!r} has dtype {trt_dtype}, which numpy cannot hold"
            )
        bindings.append(
            TensorBinding(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=np.dtype(np_dtype),
                shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
            )
        )
    return tuple(bindings)


class TorchCuda:
    """Device buffers and a stream, by torch (created in the worker, after fork)."""

    def __init__(self, device: int) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device)
        self.stream = torch.cuda.Stream(self.device)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def upload(self, array: np.ndarray) -> tuple[Any, int]:
        with self.torch.cuda.stream(self.stream):
            tensor = self.torch.from_numpy(np.ascontiguousarray(array)).to(
                self.device, non_blocking=True
            )
        return tensor, int(tensor.data_ptr())

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, int]:
        torch_dtype = self.torch.from_numpy(np.empty(0, dtype)).dtype
        with self.torch.cuda.stream(self.stream):
            tensor = self.torch.empty(shape, dtype=torch_dtype, device=self.device)
        return tensor, int(tensor.data_ptr())

    def download(self, handle: Any) -> np.ndarray:
        return handle.cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()


class TensorRTEngine:
    """A cached engine, loaded lazily in the process that runs it.

    Parameters
    ----------
    engine_path
        An engine written by :func:`build_engine`.
    expected
        The key the engine must match (its sidecar is checked before loading);
        ``None`` checks the sidecar against this process's TensorRT and GPU only.
    device
        CUDA device index.
    """

    def __init__(
        self, engine_path: str | Path, *, expected: EngineKey | None = None, device: int = 0
    ) -> None:
        self.engine_path = Path(engine_path)
        self.expected = expected
        self.device = device
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._state: tuple[Any, Any, Any, tuple[TensorBinding, ...]] | None = None

    def _device_backend(self) -> Any:
        return TorchCuda(self.device)

    def _check(self, trt: ModuleType) -> None:
        cache = EngineCache(self.engine_path.parent)
        stored = cache.read_metadata(self.engine_path)
        if stored is None:
            raise EngineMismatchError(
                f"engine {self.engine_path.name} has no readable metadata; rebuild it"
            )
        key = self.expected or EngineKey(
            stored.get("onnx_sha256", "0" * 64),
            trt.__version__,
            current_gpu(self.device),
            stored.get("precision", "fp32"),
            stored.get("min_batch_size", 1),
            stored.get("opt_batch_size", 1),
            stored.get("max_batch_size", 1),
        )
        cache.verify(self.engine_path, key)

    def load(self) -> TensorRTEngine:
        """Deserialize the engine in this process (after fork) if not done yet."""
        with self._lock:
            if self._state is not None and self._pid == os.getpid():
                return self
            trt = import_tensorrt()
            self._check(trt)
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is None:
                raise TensorRTError(
                    f"TensorRT could not deserialize {self.engine_path.name}; rebuild it"
                )
            context = engine.create_execution_context()
            bindings = engine_bindings(trt, engine)
            self._state = (engine, context, self._device_backend(), bindings)
            self._pid = os.getpid()
            logger.info("loaded TensorRT engine %s", self.engine_path.name)
            return self

    @property
    def bindings(self) -> tuple[TensorBinding, ...]:
        self.load()
        return self._state[3]  # type: ignore[index]

    def _check_feed(
        self, engine: Any, bindings: Sequence[TensorBinding], feed: Mapping[str, np.ndarray]
    ) -> None:
        inputs = {b.name: b for b in bindings if b.is_input}
        if set(feed) != set(inputs):
            raise TensorRTError(f"engine inputs are {sorted(inputs)}, got {sorted(feed)}")
        for name, binding in inputs.items():
            array = feed[name]
            if array.dtype != binding.dtype:
                raise TensorRTError(f"input {name!r} must be {binding.dtype}, got {array.dtype}")
            if len(array.shape) != len(binding.shape) or any(
                e >= 0 and e != a for e, a in zip(binding.shape, array.shape, strict=True)
            ):
                raise TensorRTError(
                    f"input {name!r} has shape {array.shape}, the engine takes {binding.shape}"
                )
            low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
            if not all(lo <= a <= hi for lo, a, hi in zip(low, array.shape, high, strict=True)):
                raise TensorRTError(
                    f"input {name!r} shape {array.shape} is outside the profile {low}..{high}"
                )

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name (host arrays)."""
        self.load()
        engine, context, device, bindings = self._state  # type: ignore[misc]
        self._check_feed(engine, bindings, feed)
        handles = {}
        with self._lock:
            for binding in bindings:
                if binding.is_input:
                    array = feed[binding.name]
                    if not context.set_input_shape(binding.name, tuple(array.shape)):
                        raise TensorRTError(
                            f"TensorRT refused shape {array.shape} for {binding.name!r}"
                        )
                    handles[binding.name], address = device.upload(array)
                    context.set_tensor_address(binding.name, address)
            for binding in bindings:
                if not binding.is_input:
                    shape = tuple(int(d) for d in context.get_tensor_shape(binding.name))
                    if any(d < 0 for d in shape):
                        raise TensorRTError(
                            f"output {binding.name!r} shape {shape} is unresolved "
                            "after setting inputs"
                        )
                    handles[binding.name], address = device.empty(shape, binding.dtype)
                    context.set_tensor_address(binding.name, address)
            if not context.execute_async_v3(device.stream_handle):
                raise TensorRTError(f"TensorRT failed to enqueue {self.engine_path.name}")
            device.synchronize()
            return {b.name: device.download(handles[b.name]) for b in bindings if not b.is_input}

    def close(self) -> None:
        with self._lock:
            self._state = None
            self._pid = None


class TensorRTVisionEmbedder:
    """A vision tower engine (:mod:`engine.backends.vision_onnx` export) as an ``HFGroundingVLM``
    embedder."""

    def __init__(
        self,
        engine: TensorRTEngine,
        *,
        input_name: str = "pixel_values",
        output_name: str = "image_embeds",
    ) -> None:
        self.engine = engine
        self.input_name = input_name
        self.output_name = output_name

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        outputs = self.engine.run(
            {self.input_name: np.ascontiguousarray(pixel_values, dtype=np.float32)}
        )
        return outputs[self.output_name].astype(np.float32, copy=False)

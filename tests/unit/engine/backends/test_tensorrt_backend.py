"""The native TensorRT backend.

Everything around TensorRT (cache keys, metadata checks, refusal and rebuild of
mismatched engines, profile shapes, precision handling on TensorRT 10 and 11,
I/O binding bookkeeping, reload after fork, the detector's reuse of the ONNX
Runtime backend's post-processing) runs on the CPU against a small fake
``tensorrt`` module whose "engine" executes the ONNX graph with ONNX Runtime.
The real build-and-run tests are marked ``gpu`` and compare TensorRT with ONNX
Runtime on a small exported model.
"""

from __future__ import annotations

import enum
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from engine.backends import tensorrt_backend as trtb
from engine.backends import trt_runtime
from engine.backends.trt_cache import (
    EngineCache,
    EngineKey,
    EngineMismatchError,
    GpuIdentity,
    TensorRTError,
)

H100 = GpuIdentity("NVIDIA H100 80GB HBM3", (9, 0))
L4 = GpuIdentity("NVIDIA L4", (8, 9))


# -- a small fake of the TensorRT 10/11 Python API ------------------------------------------


class _IOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class _DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT64 = 5


_ONNX_TO_TRT = {
    TensorProto.FLOAT: _DataType.FLOAT,
    TensorProto.FLOAT16: _DataType.HALF,
    TensorProto.INT64: _DataType.INT64,
}


class _Tensor:
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, shape, dtype


class _Network:
    def __init__(self, flags):
        self.flags, self.inputs, self.outputs, self.onnx_path = flags, [], [], None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class _Parser:
    def __init__(self, network, logger):
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path):
        graph = onnx.load(path).graph
        dims = lambda v: tuple(
            d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim
        )
        self.network.inputs = [
            _Tensor(v.name, dims(v), v.type.tensor_type.elem_type) for v in graph.input
        ]
        self.network.outputs = [
            _Tensor(v.name, dims(v), v.type.tensor_type.elem_type) for v in graph.output
        ]
        self.network.onnx_path = path
        return True


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class _TimingCache:
    def __init__(self, data):
        self.data = bytes(data)

    def serialize(self):
        return self.data + b"+tuned"


class _Config:
    def __init__(self, trt):
        self.trt, self.flags, self.profiles, self.pools, self.timing = trt, set(), [], {}, None
        self.int8_calibrator = None

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)
        self.cleared = getattr(self, "cleared", set()) | {flag}

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def set_calibration_profile(self, profile):
        self.calibration_profile = profile

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def create_timing_cache(self, data):
        self.trt.timing_loaded.append(bytes(data))
        return _TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing = cache

    def get_timing_cache(self):
        return self.timing


class _Builder:
    def __init__(self, trt, logger):
        self.trt = trt

    def create_builder_config(self):
        return _Config(self.trt)

    def create_optimization_profile(self):
        return _Profile()

    def create_network(self, flags=0):
        return _Network(flags)

    def build_serialized_network(self, network, config):
        self.trt.builds.append({"flags": network.flags, "config_flags": sorted(config.flags),
                                "cleared": sorted(getattr(config, "cleared", ())),
                                "calibrator": config.int8_calibrator})
        plan = {"onnx": network.onnx_path, "profile": config.profiles[0].shapes,
                "inputs": [(t.name, t.shape, t.dtype) for t in network.inputs],
                "outputs": [(t.name, t.shape, t.dtype) for t in network.outputs]}
        return json.dumps(plan).encode()


class _Context:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):  # shape inference by running the graph on zeros
        feed = {n: np.zeros(s, np.float32) for n, s in self.shapes.items()}
        outputs = self.engine.session.run(None, feed)
        return outputs[[o[0] for o in self.engine.plan["outputs"]].index(name)].shape

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream_handle):
        memory = self.engine.trt.memory
        feed = {name: memory[self.addresses[name]] for name, _, _ in self.engine.plan["inputs"]}
        outputs = self.engine.session.run(None, feed)
        for (name, _, _), value in zip(self.engine.plan["outputs"], outputs):
            np.copyto(memory[self.addresses[name]], value)
        return True


class _Engine:
    def __init__(self, trt, plan):
        self.trt, self.plan = trt, plan
        self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
        self.io = [(n, s, d, _IOMode.INPUT) for n, s, d in plan["inputs"]] + [
            (n, s, d, _IOMode.OUTPUT) for n, s, d in plan["outputs"]
        ]

    num_io_tensors = property(lambda self: len(self.io))

    def _find(self, name):
        return next(t for t in self.io if t[0] == name)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_mode(self, name):
        return self._find(name)[3]

    def get_tensor_dtype(self, name):
        return _ONNX_TO_TRT[self._find(name)[2]]

    def get_tensor_shape(self, name):
        return self._find(name)[1]

    def get_tensor_profile_shape(self, name, profile_index):
        return [list(s) for s in self.plan["profile"][name]]

    def create_execution_context(self):
        return _Context(self)


class _Runtime:
    def __init__(self, trt, logger):
        self.trt = trt

    def deserialize_cuda_engine(self, data):
        self.trt.loads += 1
        return _Engine(self.trt, json.loads(data))


def make_fake_tensorrt(version: str = "10.7.0", *, weak_typing: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    # torch looks modules up by spec
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.builds, trt.timing_loaded, trt.loads, trt.memory = [], [], 0, {}
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.BuilderFlag = types.SimpleNamespace(
        **({"FP16": "FP16", "INT8": "INT8"} if weak_typing else {}), TF32="TF32"
    )
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0}
    )
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = _IOMode
    trt.Builder = lambda logger: _Builder(trt, logger)
    trt.OnnxParser = _Parser
    trt.Runtime = lambda logger: _Runtime(trt, logger)
    return trt


class FakeDevice:
    """Host arrays standing in for device buffers, addressed by integers like device pointers."""

    stream_handle = 7

    def __init__(self, memory):
        self.memory = memory

    def _register(self, array):
        address = 0x1000 + len(self.memory) * 0x100
        self.memory[address] = array
        return array, address

    def upload(self, array):
        return self._register(np.array(array))

    def empty(self, shape, dtype):
        return self._register(np.full(shape, np.nan, dtype))

    def download(self, handle):
        return handle.copy()

    def synchronize(self):
        pass


@pytest.fixture()
def fake_trt(monkeypatch):
    """Install a fake TensorRT 10 on an H100; returns a function to swap version/GPU."""
    state = {}

    def install(version="10.7.0", *, weak_typing=True, gpu=H100):
        trt = make_fake_tensorrt(version, weak_typing=weak_typing)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_runtime, "current_gpu", lambda device=0: gpu)
        monkeypatch.setattr(
            trt_runtime.TensorRTEngine, "_device_backend", lambda self: FakeDevice(trt.memory)
        )
        state["trt"] = trt
        return trt

    install()
    return install


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    """A small conv net with a dynamic batch axis, exported by torch: (N, 3, 16, 16) → logits,
    features."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            features = torch.relu(self.conv(x))
            return self.head(features.mean(dim=(2, 3))), features

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    torch.onnx.export(
        Net().eval(),
        (torch.rand(2, 3, 16, 16),),
        str(path),
        input_names=["images"],
        output_names=["logits", "features"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="module")
def fp16_onnx(tmp_path_factory) -> Path:
    """A graph already in float16 (what ModelOpt AutoCast produces for TensorRT 11)."""
    node = helper.make_node("Add", ["a", "b"], ["y"])
    tensor = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT16, ["batch", 4])
    model = helper.make_model(
        helper.make_graph([node], "add16", [tensor("a"), tensor("b")], [tensor("y")]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = tmp_path_factory.mktemp("onnx16") / "add16.onnx"
    onnx.save(model, str(path))
    return path


def _images(batch, seed=0):
    return np.random.default_rng(seed).random((batch, 3, 16, 16), dtype=np.float32)


# -- profile shapes ----------------------------------------------------------------------------


def test_profile_spans_batch_one_to_max_with_opt_at_max_by_default():
    assert trtb.profile_shapes((-1, 3, 256, 256), max_batch_size=8) == (
        (1, 3, 256, 256),
        (8, 3, 256, 256),
        (8, 3, 256, 256),
    )
    assert trtb.profile_shapes((-1, 3, 4, 4), max_batch_size=8, opt_batch_size=2)[1] == (2, 3, 4, 4)


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((-1, 3, -1, -1), {"max_batch_size": 4}, "dynamic non-batch"),
        ((1, 3, 8, 8), {"max_batch_size": 4}, "fixed batch of 1"),
        ((-1, 3, 8, 8), {"max_batch_size": 4, "opt_batch_size": 5}, "opt_batch_size"),
        ((-1, 3), {"max_batch_size": 0}, "max_batch_size"),
    ],
)
def test_profile_refuses_what_one_profile_cannot_cover(shape, kwargs, message):
    with pytest.raises(TensorRTError, match=message):
        trtb.profile_shapes(shape, **kwargs)


def test_fixed_batch_equal_to_max_is_a_static_profile():
    assert trtb.profile_shapes((2, 3, 8, 8), max_batch_size=2) == ((2, 3, 8, 8),) * 3


# -- cache keys and metadata -----------------------------------------------------------------


def _key(**changes):
    values = dict(
        onnx_sha256="a" * 64,
        tensorrt_version="10.7.0",
        gpu=H100,
        precision="fp16",
        max_batch_size=8,
        opt_batch_size=8,
    )
    values.update(changes)
    return EngineKey(**values)


def test_every_part_of_the_key_changes_the_engine_file(tmp_path):
    cache = EngineCache(tmp_path)
    base = cache.engine_path(_key())
    assert base == cache.engine_path(_key())
    variants = [
        _key(onnx_sha256="b" * 64),
        _key(tensorrt_version="11.0.0"),
        _key(gpu=L4),
        _key(gpu=GpuIdentity(H100.name, (8, 0))),
        _key(precision="fp32"),
        _key(max_batch_size=16, opt_batch_size=16),
    ]
    paths = {cache.engine_path(k) for k in variants}
    assert base not in paths and len(paths) == len(variants)


def test_mismatch_messages_name_both_sides(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(_key(), b"plan")
    cache.verify(path, _key())  # matches
    with pytest.raises(EngineMismatchError) as info:
        cache.verify(path, _key(tensorrt_version="10.8.1", gpu=L4, precision="int8"))
    message = str(info.value)
    assert "built with TensorRT 10.7.0, this worker runs TensorRT 10.8.1" in message
    assert (
        "built for GPU NVIDIA H100 80GB HBM3 (sm_90), this worker has NVIDIA L4 (sm_89)" in message
    )
    assert "built at precision fp16, int8 requested" in message


def test_engine_without_metadata_is_refused(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(_key(), b"plan")
    cache.metadata_path(path).unlink()
    with pytest.raises(EngineMismatchError, match="no readable metadata"):
        cache.verify(path, _key())
    assert cache.lookup(_key()) is None  # → rebuild


def test_onnx_hash_covers_external_data(tmp_path, small_onnx):
    model = onnx.load(str(small_onnx))
    onnx.save(
        model,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    from engine.backends.trt_cache import onnx_sha256

    before = onnx_sha256(tmp_path / "ext.onnx")
    data = bytearray((tmp_path / "ext.onnx.data").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "ext.onnx.data").write_bytes(bytes(data))
    assert onnx_sha256(tmp_path / "ext.onnx") != before


# -- building (fake TensorRT) ----------------------------------------------------------------


def test_fp16_build_on_tensorrt10_sets_flag_profile_and_timing_cache(
    fake_trt, small_onnx, tmp_path
):
    trt = fake_trt("10.7.0")
    path = trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=4)
    (build,) = trt.builds
    assert build["flags"] == 0  # explicit batch is implicit in 10+; weak typing: no STRONGLY_TYPED
    assert "FP16" in build["config_flags"] and "INT8" not in build["config_flags"]
    plan = json.loads(path.read_bytes())
    assert plan["profile"]["images"] == [[1, 3, 16, 16], [4, 3, 16, 16], [4, 3, 16, 16]]
    meta = json.loads(EngineCache.metadata_path(path).read_text())
    assert (
        meta["tensorrt_version"] == "10.7.0"
        and meta["gpu"]["name"] == H100.name
        and meta["precision"] == "fp16"
    )
    timing = EngineCache(tmp_path).timing_cache_path(tensorrt_version="10.7.0", gpu=H100)
    assert timing.read_bytes() == b"+tuned"

    # cached: no second build; a forced rebuild starts from the saved timing cache
    assert (
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=4)
        == path
    )
    assert len(trt.builds) == 1
    trtb.build_engine(
        small_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=4, rebuild=True
    )
    assert trt.timing_loaded == [b"", b"+tuned"]


def test_engine_for_another_tensorrt_or_gpu_is_refused_and_rebuilt(
    fake_trt, small_onnx, tmp_path, caplog
):
    fake_trt("10.7.0")
    old = trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=2)
    trt = fake_trt("10.8.0", gpu=H100)
    with pytest.raises(
        EngineMismatchError, match="built with TensorRT 10.7.0, this worker runs TensorRT 10.8.0"
    ):
        trtb.TensorRTEngine(old).load()
    new = trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=2)
    assert new != old and len(trt.builds) == 1
    trtb.TensorRTEngine(new).load()  # matches this worker

    # same key path, but a sidecar claiming another GPU (e.g. a copied cache directory): rebuilt
    sidecar = EngineCache.metadata_path(new)
    meta = json.loads(sidecar.read_text())
    meta["gpu"] = {"name": L4.name, "compute_capability": [8, 9]}
    sidecar.write_text(json.dumps(meta))
    with caplog.at_level("WARNING"):
        again = trtb.build_engine(
            small_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=2
        )
    assert again == new and len(trt.builds) == 2
    assert "built for GPU NVIDIA L4 (sm_89)" in caplog.text
    assert json.loads(sidecar.read_text())["gpu"]["name"] == H100.name


def test_tensorrt11_takes_precision_from_the_graph(fake_trt, small_onnx, fp16_onnx, tmp_path):
    trt = fake_trt("11.1.0", weak_typing=False)
    with pytest.raises(TensorRTError, match="strongly typed.*AutoCast"):
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=2)
    with pytest.raises(TensorRTError, match="Q/DQ"):
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="int8", max_batch_size=2)
    trtb.build_engine(fp16_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=2)
    trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp32", max_batch_size=2)
    assert [b["config_flags"] for b in trt.builds] == [[], []]  # no precision flags exist in 11
    assert [b["cleared"] for b in trt.builds] == [[], ["TF32"]]  # fp32 means fp32, not TF32
    assert [b["flags"] for b in trt.builds] == [0, 0]


def test_strongly_typed_on_tensorrt10_sets_the_network_flag(fake_trt, fp16_onnx, tmp_path):
    trt = fake_trt("10.7.0")
    trtb.build_engine(fp16_onnx, cache_dir=tmp_path, precision="strongly_typed", max_batch_size=2)
    assert trt.builds[0]["flags"] == 1 << 0 and trt.builds[0]["config_flags"] == []


def test_int8_on_tensorrt10_needs_a_calibrator_or_qdq(fake_trt, small_onnx, tmp_path):
    trt = fake_trt("10.7.0")
    with pytest.raises(TensorRTError, match="calibrator or Q/DQ"):
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="int8", max_batch_size=2)
    calibrator = object()
    trtb.build_engine(
        small_onnx, cache_dir=tmp_path, precision="int8", max_batch_size=2, calibrator=calibrator
    )
    assert (
        trt.builds[0]["config_flags"] == ["FP16", "INT8"]
        and trt.builds[0]["calibrator"] is calibrator
    )


def test_int8_calibrator_feeds_device_pointers_and_keeps_its_table(fake_trt, tmp_path):
    trt = fake_trt("10.7.0")
    trt.IInt8EntropyCalibrator2 = type(
        "IInt8EntropyCalibrator2", (), {"__init__": lambda self: None}
    )
    memory = {}
    batches = [{"images": _images(2, seed=s)} for s in range(3)]
    calibrator = trtb.make_int8_calibrator(iter(batches), cache_file=tmp_path / "calib.table",
                                           device_backend=lambda device: FakeDevice(memory))
    assert calibrator.get_batch_size() == 2
    assert calibrator.read_calibration_cache() is None
    for expected in batches:
        (pointer,) = calibrator.get_batch(["images"])
        np.testing.assert_array_equal(memory[pointer], expected["images"])
    assert calibrator.get_batch(["images"]) is None  # calibration ends
    calibrator.write_calibration_cache(b"table")
    assert calibrator.read_calibration_cache() == b"table"

    trt11 = fake_trt("11.1.0", weak_typing=False)
    assert not hasattr(trt11, "IInt8EntropyCalibrator2")
    with pytest.raises(TensorRTError, match="no INT8 calibration"):
        trtb.make_int8_calibrator([], cache_file=tmp_path / "x")


def test_missing_tensorrt_is_a_clear_error(monkeypatch, small_onnx, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTError, match="TensorRT is not installed"):
        trtb.build_engine(small_onnx, cache_dir=tmp_path)


# -- running (fake TensorRT, ONNX Runtime behind it) -------------------------------------------


def test_run_binds_inputs_and_allocates_outputs_by_name(fake_trt, small_onnx, tmp_path):
    fake_trt()
    engine = trtb.TensorRTEngine(
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp32", max_batch_size=4)
    )
    bindings = engine.bindings
    assert [(b.name, b.is_input, b.shape) for b in bindings] == [
        ("images", True, (-1, 3, 16, 16)),
        ("logits", False, (-1, 2)),
        ("features", False, (-1, 4, 16, 16)),
    ]
    reference = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        images = _images(batch, seed=batch)
        out = engine.run({"images": images})
        logits, features = reference.run(None, {"images": images})
        assert out["logits"].shape == (batch, 2) and out["features"].shape == (batch, 4, 16, 16)
        np.testing.assert_allclose(out["logits"], logits, rtol=1e-6)
        np.testing.assert_allclose(out["features"], features, rtol=1e-6)


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"images": _images(5)}, "outside the profile"),
        ({"images": _images(1).astype(np.float64)}, "must be float32"),
        ({"images": np.zeros((1, 3, 8, 8), np.float32)}, "the engine takes"),
        ({"pixels": _images(1)}, "engine inputs are"),
    ],
)
def test_run_refuses_inputs_the_engine_cannot_take(fake_trt, small_onnx, tmp_path, feed, message):
    fake_trt()
    engine = trtb.TensorRTEngine(
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp32", max_batch_size=4)
    )
    with pytest.raises(TensorRTError, match=message):
        engine.run(feed)


def test_engine_loads_lazily_and_again_after_fork(fake_trt, small_onnx, tmp_path, monkeypatch):
    trt = fake_trt()
    engine = trtb.TensorRTEngine(
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp32", max_batch_size=2)
    )
    assert trt.loads == 0  # constructing touches no TensorRT/CUDA
    engine.run({"images": _images(1)})
    engine.run({"images": _images(2)})
    assert trt.loads == 1
    monkeypatch.setattr(trt_runtime.os, "getpid", lambda: -42)  # as in a forked worker
    engine.run({"images": _images(1)})
    assert trt.loads == 2


def test_vision_embedder_runs_the_engine(fake_trt, small_onnx, tmp_path):
    fake_trt()
    engine = trtb.TensorRTEngine(
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision="fp32", max_batch_size=2)
    )
    embed = trtb.TensorRTVisionEmbedder(engine, input_name="images", output_name="logits")
    images = _images(2)
    expected = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"images": images}
    )[0]
    np.testing.assert_allclose(embed(images), expected, rtol=1e-6)


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory) -> Path:
    """The default detector's network with random weights, exported as the project exports it."""
    torch = pytest.importorskip("torch")
    from engine.default_model.export import export_onnx
    from engine.default_model.network import CenterNetDetector

    directory = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    network = CenterNetDetector()
    # untrained heads: make peaks confident and boxes a few cells wide so that there is something to
    # decode
    torch.nn.init.constant_(network.heatmap[-1].bias, 0.0)
    torch.nn.init.constant_(network.size[-1].bias, 4.0)
    torch.save(network.state_dict(), directory / "weights.pt")
    return export_onnx(directory / "weights.pt", directory / "detector.onnx", score_threshold=0.05)


@pytest.mark.slow
def test_detector_reuses_the_onnx_backends_post_processing(fake_trt, detector_onnx, tmp_path):
    from engine.backends.onnxruntime_backend import OnnxDetector
    from engine.model import GenerationRequest
    from engine.report import Task

    trt = fake_trt()
    reference = OnnxDetector(detector_onnx, max_batch_size=2)
    detector = trtb.TensorRTDetector(
        detector_onnx, cache_dir=tmp_path, precision="fp16", max_batch_size=2
    )
    assert trt.builds == []  # nothing built or loaded before the first request
    assert (
        detector.info.version.endswith("+trt-fp16")
        and detector.info.device_uid != reference.info.device_uid
    )
    width, height = detector.input_size
    rng = np.random.default_rng(0)
    requests = [
        GenerationRequest(
            image=rng.random((height, width, 3), dtype=np.float32),
            task=Task.DETECTION,
            language=lang,
        )
        for lang in ("en", "zh-CN", "en")
    ]
    texts = detector.generate(requests)
    assert texts == reference.generate(requests)
    assert all("<box>" in text for text in texts) and "：" in texts[1]
    assert len(trt.builds) == 1 and trt.loads == 1


# -- the real thing --------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("fp16", 2e-2)])
def test_real_engine_matches_onnxruntime(small_onnx, tmp_path, precision, tolerance):
    path = trtb.build_engine(small_onnx, cache_dir=tmp_path, precision=precision, max_batch_size=4)
    mtime = path.stat().st_mtime_ns
    engine = trtb.TensorRTEngine(path)
    reference = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 4):
        images = _images(batch, seed=batch)
        out = engine.run({"images": images})
        logits, features = reference.run(None, {"images": images})
        np.testing.assert_allclose(out["logits"], logits, atol=tolerance, rtol=tolerance)
        np.testing.assert_allclose(out["features"], features, atol=tolerance, rtol=tolerance)
    assert (
        trtb.build_engine(small_onnx, cache_dir=tmp_path, precision=precision, max_batch_size=4)
        == path
    )
    assert path.stat().st_mtime_ns == mtime  # served from the cache


@pytest.mark.gpu
def test_real_detector_agrees_with_onnxruntime(detector_onnx, tmp_path):
    from engine.backends.onnxruntime_backend import OnnxDetector

    width, height = OnnxDetector(detector_onnx).input_size
    images = list(np.random.default_rng(1).random((2, height, width, 3), dtype=np.float32))
    expected = OnnxDetector(detector_onnx).detect(images, score_threshold=0.05)
    got = trtb.TensorRTDetector(
        detector_onnx, cache_dir=tmp_path, precision="fp32", max_batch_size=2
    ).detect(images, score_threshold=0.05)
    for e, g in zip(expected, got):
        assert len(e) == len(g)
        np.testing.assert_allclose(g.boxes, e.boxes, atol=0.5)
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-3)


def _tiny_internvl(tmp_path: Path) -> Path:
    """A transformers-native InternVL checkpoint (28x28 input, 1 image token), no chat template."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    special = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<ref>",
        "</ref>",
    ]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["right lung left lung 1 2 3"],
        trainers.WordLevelTrainer(special_tokens=["<unk>", *special]),
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special,
    )
    torch.manual_seed(1)
    config = transformers.InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
            num_hidden_layers=1,
            image_size=[28, 28],
            patch_size=[14, 14],
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=len(fast),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        ),
        image_token_id=fast.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=1,
    )
    model_dir = tmp_path / "internvl"
    transformers.InternVLForConditionalGeneration(config).save_pretrained(model_dir)
    fast.save_pretrained(model_dir)
    return model_dir


def _vision_split_outputs(
    tmp_path: Path, *, device: str, precision: str
) -> tuple[list[str], list[str], tuple[str, ...]]:
    """Generate with the vision tower in torch, then with it as a TensorRT engine."""
    from engine.backends.hf_backend import HFGroundingVLM
    from engine.backends.vision_onnx import export_vision_tower
    from engine.model import GenerationRequest
    from engine.report import Task

    model_dir = _tiny_internvl(tmp_path)
    torch_only = HFGroundingVLM(model_dir, max_new_tokens=4, device=device, dtype="float32")
    onnx_path = export_vision_tower(torch_only, tmp_path / "vision.onnx")
    engine = trtb.TensorRTEngine(
        trtb.build_engine(
            onnx_path, cache_dir=tmp_path / "engines", precision=precision, max_batch_size=2
        )
    )
    split = HFGroundingVLM(
        model_dir,
        max_new_tokens=4,
        max_batch_size=2,
        device=device,
        dtype="float32",
        vision_embedder=trtb.TensorRTVisionEmbedder(engine),
    )
    rng = np.random.default_rng(3)
    requests = [
        GenerationRequest(
            image=rng.random((28, 28, 3), dtype=np.float32),
            task=Task.TEXT_TO_REGION,
            targets=("right lung",),
        )
        for _ in range(2)
    ]
    return (
        split.generate(requests),
        [torch_only.generate([r])[0] for r in requests],
        split.last_texts,
    )


def test_vision_tower_served_by_tensorrt_while_the_llm_runs_in_torch(fake_trt, tmp_path):
    """HFGroundingVLM + an exported InternVL vision tower as a (fake) TensorRT engine."""
    split, reference, texts = _vision_split_outputs(tmp_path, device="cpu", precision="fp32")
    assert split == reference
    assert "<img><IMG_CONTEXT></img>" in texts[0]  # ChatML fallback: no chat template shipped


@pytest.mark.gpu
def test_real_tensorrt_vision_tower_with_the_llm_on_cuda(tmp_path):
    split, reference, _ = _vision_split_outputs(tmp_path, device="cuda", precision="fp32")
    assert split == reference


def test_tensorrt_detector_keeps_what_the_model_reports(fake_trt, tmp_path):
    from engine.backends.onnxruntime_backend import OnnxDetector

    fake_trt()
    reference = OnnxDetector()
    detector = trtb.TensorRTDetector(cache_dir=tmp_path, precision="fp16")
    assert detector.reported_classes == reference.reported_classes
    # the SR's "not reported by this model"
    assert detector.info.parameters == reference.info.parameters
    assert any("not reported by this model" in p for p in detector.info.parameters)

"""One error hierarchy per package: every public exception a package defines derives from its
root, and the root is exported in the package's ``__all__``, so callers catch it precisely
instead of ValueError / RuntimeError / Exception wholesale."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

ROOTS = {
    "engine": "EngineError",
    "exporters": "ExportError",
    "dicom_node": "DicomNodeError",
    "worklist": "WorklistError",
}
#: Modules that need optional dependencies (torch, transformers, TensorRT) to import.
OPTIONAL = ("engine.default_model.train", "engine.default_model.export", "engine.backends.hf_backend",
            "engine.backends.tensorrt_backend", "engine.backends.trt_runtime", "engine.backends.vision_onnx",
            "engine.default_model.model", "engine.default_model.evaluate", "worklist.migrations")


def _exceptions(package_name: str) -> list[type[BaseException]]:
    package = importlib.import_module(package_name)
    found = []
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        if info.name.startswith(OPTIONAL):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name
                    and not name.startswith("_")):
                found.append(value)
    return found


@pytest.mark.parametrize("package_name", sorted(ROOTS))
def test_every_public_exception_derives_from_the_package_root(package_name):
    package = importlib.import_module(package_name)
    root = getattr(package, ROOTS[package_name])
    assert ROOTS[package_name] in package.__all__
    exceptions = _exceptions(package_name)
    assert exceptions
    strays = [f"{e.__module__}.{e.__qualname__}" for e in exceptions if not issubclass(e, root)]
    assert strays == []


def test_engine_errors_keep_the_builtin_bases_callers_relied_on():
    from engine.analyze import AnalysisError
    from engine.model import ModelError
    from engine.report import ReportError
    from engine.vocabulary import VocabularyError

    assert issubclass(ReportError, ValueError) and issubclass(ModelError, RuntimeError)
    assert issubclass(AnalysisError, RuntimeError) and issubclass(VocabularyError, KeyError)

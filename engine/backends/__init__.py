"""Model backends implementing :class:`engine.model.RegionAwareModel`.

Each backend module imports its heavy runtime (onnxruntime, tensorrt, torch,
transformers) lazily, when a model is loaded, never at import time.
"""

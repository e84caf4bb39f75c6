"""Prometheus metrics of the engine: time a model spends on each batch.

A module-level :mod:`prometheus_client` histogram, observed by
:class:`engine.batching.MicroBatcher` around each ``model.generate`` call; the
package reads no settings (multi-process mode, when wanted, is set up by the
application before it imports this module).
"""

from __future__ import annotations

from prometheus_client import Histogram

__all__ = ["MODEL_INFERENCE_SECONDS"]

MODEL_INFERENCE_SECONDS = Histogram(
    "radground_model_inference_seconds",
    "Seconds one batch spends in the model's generate (decoding and preparing the images "
    "excluded), by model name (ModelInfo.name).",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)

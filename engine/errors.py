"""The root of the engine's exceptions.

Every exception the engine raises on purpose derives from :class:`EngineError`,
so a caller (the pipeline, the CLI) catches ``EngineError`` rather than
``ValueError`` or ``Exception`` wholesale. Subclasses that used to be (and
are documented as) ``ValueError``, ``RuntimeError`` or ``KeyError`` keep that
base too, so ``except ValueError`` around a constructor still works.

============================================  ==========================
class                                          also a
============================================  ==========================
``engine.model.ModelError`` (backends' too)    ``RuntimeError``
``engine.analyze.AnalysisError``               ``RuntimeError``
``engine.batching.BatchingError``              ``RuntimeError``
``engine.report.ReportError``                  ``ValueError``
``engine.evaluation.EvaluationError``          ``ValueError``
``engine.prompts.PromptError``                 ``ValueError``
``engine.grammar.GrammarError``                ``ValueError``
``engine.default_model.data.DatasetError``     ``ValueError``
``OperatingPointError``, ``MetadataError``     ``ValueError``
                                               (both in ``engine.default_model``)
``engine.vocabulary.VocabularyError``          ``KeyError``
``engine.pixels.PixelError`` and subclasses    (some ``ValueError``)
============================================  ==========================
"""

from __future__ import annotations

__all__ = ["EngineError"]


class EngineError(Exception):
    """Something the engine refuses or cannot do; the message says what and why."""

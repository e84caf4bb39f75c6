"""The class of a reviewed finding, as the default model's training data and the metrics name it.

A review finding records its class as the model or the radiologist named it
(``ReviewFinding.model_class`` / ``final_class``: an English label or a coded concept's
meaning, e.g. "pleural effusion"). Training data spells classes as
:data:`engine.default_model.config.CLASSES` does ("Effusion"); metric labels need a small,
fixed set of values whatever a model writes. Both are read through the vocabulary
(:func:`engine.vocabulary.lookup`: names and synonyms in English and Chinese).
"""

from __future__ import annotations

from engine.default_model.config import CLASSES
from engine.vocabulary import VocabularyGroup, lookup

__all__ = ["OTHER_CLASS", "dataset_class", "metric_class"]

#: The metric label of a class the vocabulary does not know (free text from a VLM).
OTHER_CLASS = "other"

_BY_KEY = {name.lower(): name for name in CLASSES}


def dataset_class(name: str | None) -> str | None:
    """The :data:`~engine.default_model.config.CLASSES` member ``name`` stands for, or ``None``.

    Examples
    --------
    >>> dataset_class("pleural effusion"), dataset_class("胸腔积液"), dataset_class("Infiltration")
    ('Effusion', 'Effusion', 'Infiltrate')
    >>> dataset_class("right lung") is None
    True
    """
    if not name:
        return None
    entry = lookup(name)
    if entry is None or entry.group is not VocabularyGroup.NIH_CXR_FINDING:
        return None
    return _BY_KEY.get(entry.key)


def metric_class(name: str | None) -> str:
    """A bounded label value for ``name``: its ``CLASSES`` spelling, else the vocabulary
    entry's English name, else :data:`OTHER_CLASS` (never free text, never patient data)."""
    nih = dataset_class(name)
    if nih is not None:
        return nih
    entry = lookup(name) if name else None
    return entry.name("en") if entry is not None else OTHER_CLASS

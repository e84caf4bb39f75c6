"""What images a model is made for: one rule, checked before any image reaches it.

A model declares an :class:`ApplicabilityRule` (``RegionAwareModel.applicability``;
``None`` for models that take any image, such as MedRegA, which was trained on
CT, MR and radiographs). :func:`engine.analyze.analyze_study` applies it to
every image it would send to the model, so ``radground model predict`` and the
job pipeline refuse the same images for the same reasons; only the CLI's
``--force`` switches it off.

The default detector's rule, :data:`FRONTAL_CHEST_RADIOGRAPH`, takes what it was
trained on (frontal adult chest radiographs, NIH ChestX-ray14):

* **Modality** (0008,0060) CR, DX or RG (radiographs; RG is "Radiographic
  imaging (conventional film/screen)", e.g. a digitised film). Anything else,
  or no Modality, is refused.
* **Body part**: Body Part Examined (0018,0015) CHEST (or THORAX, which some
  vendors write), or, when that is absent, an Anatomic Region Sequence
  (0008,2218) item coding the chest/thorax/lung. Another body part is refused.
  *Absent in both is accepted*: many chest radiographs carry no body part, and
  modality, view and photometry already narrow the image down.
* **View**: View Position (0018,5101) or View Code Sequence (0054,0220,
  PS3.16 CID 4010) PA or AP. A recorded view that is neither (lateral,
  oblique, decubitus...) is refused; *no view recorded is accepted*, for the
  same reason as the body part.
* **Photometry**: a single 2D frame (Number of Frames absent or 1), one sample
  per pixel, Photometric Interpretation (0028,0004) MONOCHROME1 or MONOCHROME2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pydicom

from engine.pixels.selection import image_views

__all__ = ["FRONTAL_CHEST_RADIOGRAPH", "ApplicabilityRule"]


#: SNOMED CT codes of Anatomic Region Sequence items that mean the chest.
_CHEST_REGION_CODES = frozenset({"51185008", "43799004", "39607008", "302551006"})


def _upper(values: Iterable[str]) -> frozenset[str]:
    return frozenset(str(v).strip().upper() for v in values)


def _text(dataset: pydicom.Dataset, keyword: str) -> str:
    return str(dataset.get(keyword, "") or "").strip().upper()


@dataclass(frozen=True)
class ApplicabilityRule:
    """Which images a model is made for (see the module docstring).

    Parameters
    ----------
    description
        What the model takes, in words, for messages (``"frontal chest radiographs"``).
    modalities
        Accepted Modality (0008,0060) values; empty accepts any.
    body_parts
        Accepted Body Part Examined (0018,0015) values; empty accepts any.
    body_part_codes
        Anatomic Region Sequence (0008,2218) code values that count as an accepted
        body part when Body Part Examined is absent.
    views
        Accepted view terms (View Position or View Code Sequence, as
        :func:`engine.pixels.image_views` reads them); empty accepts any.
    photometric_interpretations
        Accepted Photometric Interpretation (0028,0004) values; empty accepts any.
    single_frame
        Refuse multi-frame images (the model is 2D, one image at a time).
    """

    description: str
    modalities: frozenset[str] = frozenset()
    body_parts: frozenset[str] = frozenset()
    body_part_codes: frozenset[str] = frozenset()
    views: frozenset[str] = frozenset()
    photometric_interpretations: frozenset[str] = frozenset()
    single_frame: bool = True

    def __post_init__(self) -> None:
        for name in ("modalities", "body_parts", "views", "photometric_interpretations"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"ApplicabilityRule.{name} must be a collection of strings, not {value!r}")
            object.__setattr__(self, name, _upper(value))
        object.__setattr__(self, "body_part_codes", frozenset(str(v).strip() for v in self.body_part_codes))

    def refusal(self, dataset: pydicom.Dataset) -> str | None:
        """Why ``dataset`` is not an image the model is made for, or ``None`` when it is."""
        modality = _text(dataset, "Modality")
        if self.modalities and modality not in self.modalities:
            return f"Modality (0008,0060) {modality or '(absent)'} is not {_either(self.modalities)}"
        reason = self._body_part_refusal(dataset)
        if reason is not None:
            return reason
        views = image_views(dataset)
        if self.views and views and not views & self.views:
            return f"the view ({', '.join(sorted(views))}) is not {_either(self.views)}"
        return self._photometry_refusal(dataset)

    def _body_part_refusal(self, dataset: pydicom.Dataset) -> str | None:
        if not self.body_parts:
            return None
        part = _text(dataset, "BodyPartExamined")
        if part:
            if part in self.body_parts:
                return None
            return f"Body Part Examined (0018,0015) {part} is not {_either(self.body_parts)}"
        codes = [
            str(item.get("CodeValue", "") or "").strip()
            for item in dataset.get("AnatomicRegionSequence") or []
        ]
        codes = [c for c in codes if c]
        if not codes or set(codes) & self.body_part_codes:
            return None  # no body part recorded: accepted (see the module docstring)
        meanings = ", ".join(
            str(item.get("CodeMeaning", "") or item.get("CodeValue", ""))
            for item in dataset.AnatomicRegionSequence
        )
        return f"Anatomic Region Sequence (0008,2218) says {meanings}, not {_either(self.body_parts)}"

    def _photometry_refusal(self, dataset: pydicom.Dataset) -> str | None:
        if self.single_frame:
            try:
                frames = int(dataset.get("NumberOfFrames", 1) or 1)
            except (TypeError, ValueError):
                return f"Number of Frames (0028,0008) {dataset.get('NumberOfFrames')!r} is not a number"
            if frames != 1:
                return f"it has {frames} frames; the model takes one 2D image"
        samples = dataset.get("SamplesPerPixel", 1)
        if samples not in (None, 1):
            return f"Samples per Pixel (0028,0002) is {samples}; the model takes grayscale (1)"
        photometric = _text(dataset, "PhotometricInterpretation")
        if self.photometric_interpretations and photometric not in self.photometric_interpretations:
            return (
                f"Photometric Interpretation (0028,0004) {photometric or '(absent)'} is not "
                f"{_either(self.photometric_interpretations)}"
            )
        return None

    def explain(self, dataset: pydicom.Dataset, *, model_name: str) -> str | None:
        """:meth:`refusal` as a sentence naming the model and what it takes."""
        reason = self.refusal(dataset)
        if reason is None:
            return None
        return f"{model_name} is made for {self.description}: {reason}"


def _either(values: frozenset[str]) -> str:
    ordered = sorted(values)
    return ordered[0] if len(ordered) == 1 else f"{', '.join(ordered[:-1])} or {ordered[-1]}"


#: The default detector's rule: frontal chest radiographs (see the module docstring).
FRONTAL_CHEST_RADIOGRAPH = ApplicabilityRule(
    description="frontal (PA/AP) chest radiographs (CR/DX)",
    modalities=frozenset({"CR", "DX", "RG"}),
    body_parts=frozenset({"CHEST", "THORAX"}),
    body_part_codes=_CHEST_REGION_CODES,
    views=frozenset({"PA", "AP"}),
    photometric_interpretations=frozenset({"MONOCHROME1", "MONOCHROME2"}),
)

"""Parser and writer for the MedRegA grounding grammar.

Region-aware models write their regions inline (``docs/architecture.md``, "The
grounding grammar"; MEDREGA.md, "Output grammar")::

    <ref>right lung</ref><box>[[102, 106, 481, 910]]</box>, <ref>left lung</ref><box>[[535, 128,
    923, 889]]</box>: No focal consolidation.

Grammar, as this module reads it
--------------------------------
* A **phrase** is one or more *ref groups* followed by a description. Ref groups
  are separated by commas (``,`` ``，`` ``、``), semicolons, white space, "and",
  和, 及 or 与. The description follows a colon (ASCII ``:`` or full-width ``：``)
  and runs to the next ref group or the end of the text. Text with no colon
  after the refs is taken as the description too (inline style), and text
  before the first ref group is a phrase without refs (e.g. a plain report).
* A **ref group** is ``<ref>label</ref>`` followed by zero or more ``<box>``
  tags, or one or more ``<box>`` tags without a ``<ref>`` (label ``None``).
* A ``<box>`` holds one or more boxes ``[x1, y1, x2, y2]``, single or double
  brackets (``[[a, b, c, d], [e, f, g, h]]``), ASCII or full-width brackets and
  commas. Coordinates are **integers 0–999 relative to the model input's width
  and height**, top-left then bottom-right. This parser returns them as they
  are; dividing by 999 (as MedRegA's code does; the paper says "[0, 1000)") and
  mapping back through the resize happens in
  ``engine.pixels``' ``ImageTransform.from_normalized``.
* Tags are matched case-insensitively, with ASCII or full-width angle brackets.

Confidence extension (RadGround)
--------------------------------
MedRegA gives no confidence. RadGround's default detector appends one optional
``<score>`` tag directly after a ``<box>`` tag, with one score in [0, 1] per box
of that tag, in the same order::

    <ref>nodule</ref><box>[[613, 200, 700, 287]]</box><score>0.82</score>: Nodule ...
    <ref>mass</ref><box>[[1, 2, 30, 40], [500, 500, 600, 650]]</box><score>[0.91, 0.47]</score>: ...

A MedRegA-style reader that extracts ``<ref>…</ref><box>…</box>`` pairs is not
disturbed by it (the tag sits outside both and outside the description after
the colon); this parser attaches the scores to their boxes.

Malformed output
----------------
:func:`parse_grounded_text` never raises on any string. What it cannot read is
dropped and described in :attr:`ParseResult.problems`: unclosed or stray tags,
coordinates that are not integers or lie outside 0–999, boxes with
``x1 >= x2`` or ``y1 >= y2`` (zero or negative area), wrong arity, scores whose
count does not match the boxes, garbage inside a tag. An unclosed tag's
content runs to the next tag: an unclosed ``<box>`` is always dropped (generation
may have stopped inside it, so its last number may be cut short); an unclosed
``<ref>`` keeps its label when another tag follows it, and is dropped when it
runs to the end of the text. Stray closing tags are removed from the text.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Self

from engine.errors import EngineError

__all__ = [
    "Box999",
    "GrammarError",
    "GroundedPhrase",
    "ParseResult",
    "RefBoxes",
    "parse_grounded_text",
    "write_grounded_text",
]

logger = logging.getLogger(__name__)


class GrammarError(EngineError, ValueError):
    """A grounded phrase could not be constructed or written (bad arguments)."""


class _Box999Fields(NamedTuple):
    x1: int
    y1: int
    x2: int
    y2: int


class Box999(_Box999Fields):
    """A box in model coordinates: integers 0–999, ``x1 < x2``, ``y1 < y2``.

    A tuple ``(x1, y1, x2, y2)``, so it can be passed wherever a plain tuple of
    model coordinates is expected (``GenerationRequest.regions``).
    """

    __slots__ = ()

    def __new__(cls, x1: int, y1: int, x2: int, y2: int) -> Self:
        values = []
        for name, value in (("x1", x1), ("y1", y1), ("x2", x2), ("y2", y2)):
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise GrammarError(f"Box999.{name} must be an integer, got {value!r}")
            value = int(value)
            if not 0 <= value <= 999:
                raise GrammarError(f"Box999.{name} must be in 0-999, got {value}")
            values.append(value)
        if not (values[0] < values[2] and values[1] < values[3]):
            raise GrammarError(f"Box999 needs x1 < x2 and y1 < y2, got {tuple(values)}")
        return super().__new__(cls, *values)


def _check_score(score: object) -> float | None:
    if score is None:
        return None
    if (
        isinstance(score, bool)
        or not isinstance(score, (int, float))
        or not (math.isfinite(score) and 0.0 <= score <= 1.0)
    ):
        raise GrammarError(f"a score must be a number in [0, 1] or None, got {score!r}")
    return float(score)


@dataclass(frozen=True)
class RefBoxes:
    """One ref group: a label and its boxes, with an optional score per box.

    Parameters
    ----------
    label
        The ``<ref>`` text, stripped of surrounding white space, or ``None`` for
        boxes written without a ``<ref>``.
    boxes
        The boxes, in the model's order (may be empty for a ref without box).
    scores
        One score in [0, 1] or ``None`` per box (the RadGround ``<score>``
        extension); defaults to all ``None``.
    """

    label: str | None
    boxes: tuple[Box999, ...] = ()
    scores: tuple[float | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.label is not None and (
            not isinstance(self.label, str)
            or not self.label.strip()
            or self.label != self.label.strip()
        ):
            raise GrammarError(
                f"RefBoxes.label must be None or a stripped non-empty string, got {self.label!r}"
            )
        boxes = tuple(self.boxes)
        if not all(isinstance(b, Box999) for b in boxes):
            raise GrammarError("RefBoxes.boxes must contain only Box999 values")
        if self.label is None and not boxes:
            raise GrammarError("RefBoxes needs a label or at least one box")
        scores = (
            (None,) * len(boxes)
            if self.scores is None
            else tuple(_check_score(s) for s in self.scores)
        )
        if len(scores) != len(boxes):
            raise GrammarError(
                f"RefBoxes needs one score per box, got {len(scores)} scores for {len(boxes)} boxes"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)


@dataclass(frozen=True)
class GroundedPhrase:
    """One or more ref groups and the description they share.

    Parameters
    ----------
    refs
        The ref groups, in order (empty for a phrase of plain text).
    description
        The text after the colon, stripped (may be empty, e.g. text→region).
    """

    refs: tuple[RefBoxes, ...]
    description: str = ""

    def __post_init__(self) -> None:
        refs = tuple(self.refs)
        if not all(isinstance(r, RefBoxes) for r in refs):
            raise GrammarError("GroundedPhrase.refs must contain only RefBoxes values")
        if not isinstance(self.description, str) or self.description != self.description.strip():
            raise GrammarError(
                f"GroundedPhrase.description must be a stripped string, got {self.description!r}"
            )
        if not refs and not self.description:
            raise GrammarError("GroundedPhrase needs at least one ref or a description")
        object.__setattr__(self, "refs", refs)

    @property
    def labels(self) -> tuple[str | None, ...]:
        return tuple(r.label for r in self.refs)

    @property
    def boxes(self) -> tuple[Box999, ...]:
        """Every box of every ref, in order."""
        return tuple(b for r in self.refs for b in r.boxes)

    @property
    def scores(self) -> tuple[float | None, ...]:
        """The score of each box in :attr:`boxes` (``None`` where none was given)."""
        return tuple(s for r in self.refs for s in r.scores)  # type: ignore[union-attr]


@dataclass(frozen=True)
class ParseResult:
    """What :func:`parse_grounded_text` could read, and what it could not."""

    phrases: tuple[GroundedPhrase, ...]
    problems: tuple[str, ...] = ()


# -- tokenizer ------------------------------------------------------------------

_TAG = re.compile(r"[<＜]\s*(/?)\s*(ref|box|score)\s*[>＞]", re.IGNORECASE)
_SEPARATORS = re.compile(r"(?:[\s,，、;；]|\band\b|和|及|与)*", re.IGNORECASE)
_TRAILING_SEPARATORS = ",，、;；"
_COLONS = ":："
_BOX_GROUP = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class _Token(NamedTuple):
    kind: str  # "text", "ref", "box", "score"
    value: str
    offset: int
    closed: bool = True
    #: for an unclosed tag: its content ran to the end of the text (likely truncated)
    at_end: bool = False


def _excerpt(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _tokenize(text: str, problems: list[str]) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    pending_text: list[str] = []
    pending_offset = 0

    def flush_text() -> None:
        if pending_text:
            tokens.append(_Token("text", "".join(pending_text), pending_offset))
            pending_text.clear()

    def add_text(chunk: str, offset: int) -> None:
        nonlocal pending_offset
        if chunk:
            if not pending_text:
                pending_offset = offset
            pending_text.append(chunk)

    while pos < len(text):
        match = _TAG.search(text, pos)
        if match is None:
            add_text(text[pos:], pos)
            break
        add_text(text[pos : match.start()], pos)
        closing, name = match.group(1), match.group(2).lower()
        if closing:
            problems.append(f"stray </{name}> at offset {match.start()} ignored")
            pos = match.end()
            continue
        following = _TAG.search(text, match.end())
        if following is not None and following.group(1) and following.group(2).lower() == name:
            flush_text()
            tokens.append(_Token(name, text[match.end() : following.start()], match.start()))
            pos = following.end()
            continue
        # Unclosed: its content runs to the next tag (or the end of the text).
        end = following.start() if following is not None else len(text)
        flush_text()
        tokens.append(
            _Token(
                name, text[match.end() : end], match.start(), closed=False, at_end=following is None
            )
        )
        where = "the end of the text" if following is None else f"offset {following.start()}"
        problems.append(f"unclosed <{name}> at offset {match.start()} (content up to {where})")
        pos = end
    flush_text()
    return tokens


# -- tag contents ------------------------------------------------------------------


def _parse_box_content(content: str, offset: int, problems: list[str]) -> list[Box999 | None]:
    """Box candidates of one ``<box>`` tag, ``None`` where one was dropped."""
    norm = unicodedata.normalize("NFKC", content)
    groups = list(_BOX_GROUP.finditer(norm))
    if not groups:
        problems.append(f"<box> at offset {offset} holds no [x1, y1, x2, y2]: {_excerpt(content)}")
        return []
    rest = _BOX_GROUP.sub("", norm)
    if rest.strip(" \t\r\n,[]"):
        problems.append(f"<box> at offset {offset} has stray text {_excerpt(rest.strip())}")
    candidates: list[Box999 | None] = []
    for group in groups:
        parts = [p.strip() for p in group.group(1).split(",")]
        if len(parts) != 4:
            problems.append(
                f"<box> at offset {offset}: {_excerpt(group.group(0))} needs 4 "
                f"numbers, got {len(parts)}; dropped"
            )
            candidates.append(None)
            continue
        if not all(_INTEGER.fullmatch(p) for p in parts):
            problems.append(
                f"<box> at offset {offset}: {_excerpt(group.group(0))} is not four "
                "integers; dropped"
            )
            candidates.append(None)
            continue
        x1, y1, x2, y2 = (int(p) for p in parts)
        if not all(0 <= v <= 999 for v in (x1, y1, x2, y2)):
            problems.append(
                f"<box> at offset {offset}: {[x1, y1, x2, y2]} lies outside 0-999; dropped"
            )
            candidates.append(None)
        elif x1 >= x2 or y1 >= y2:
            problems.append(
                f"<box> at offset {offset}: {[x1, y1, x2, y2]} has zero or negative "
                "area (x1 >= x2 or y1 >= y2); dropped"
            )
            candidates.append(None)
        else:
            candidates.append(Box999(x1, y1, x2, y2))
    return candidates


def _parse_score_content(
    content: str, count: int, offset: int, problems: list[str]
) -> list[float | None]:
    norm = unicodedata.normalize("NFKC", content).strip()
    inner = norm[1:-1] if norm.startswith("[") and norm.endswith("]") else norm
    parts = [p.strip() for p in inner.split(",")] if inner.strip() else []
    if len(parts) != count:
        problems.append(
            f"<score> at offset {offset} gives {len(parts)} scores for {count} boxes; "
            "scores ignored"
        )
        return [None] * count
    scores: list[float | None] = []
    for part in parts:
        value = float(part) if _NUMBER.fullmatch(part) else math.nan
        if math.isfinite(value) and 0.0 <= value <= 1.0:
            scores.append(value)
        else:
            problems.append(
                f"<score> at offset {offset}: {_excerpt(part)} is not a number in [0, 1]; ignored"
            )
            scores.append(None)
    return scores


# -- parser ------------------------------------------------------------------------


class _Builder:
    """Accumulates tokens into phrases (a small state machine)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.phrases: list[GroundedPhrase] = []
        self.refs: list[RefBoxes] = []  # closed ref groups of the current phrase
        self.group_open = False
        self.label: str | None = None
        self.boxes: list[Box999] = []
        self.scores: list[float | None] = []
        self.adjacent = False  # a <box> now would belong to the open group
        self.last_boxes: list[Box999 | None] | None = None  # candidates a <score> would annotate
        self.description: list[str] = []
        self.in_description = False

    def close_group(self) -> None:
        if self.group_open and (self.label is not None or self.boxes):
            self.refs.append(RefBoxes(self.label, tuple(self.boxes), tuple(self.scores)))
        self.group_open, self.label, self.boxes, self.scores = False, None, [], []
        self.adjacent, self.last_boxes = False, None

    def open_group(self, label: str | None) -> None:
        if self.in_description:
            self.close_phrase(more_follows=True)
        self.close_group()
        self.group_open, self.label, self.adjacent = True, label, True

    def close_phrase(self, *, more_follows: bool) -> None:
        self.close_group()
        description = "".join(self.description).strip()
        if more_follows:
            description = description.rstrip(_TRAILING_SEPARATORS + " \t\r\n")
        if self.refs or description:
            self.phrases.append(GroundedPhrase(tuple(self.refs), description))
        self.refs, self.description, self.in_description = [], [], False

    def text(self, value: str) -> None:
        if self.in_description:
            self.description.append(value)
            return
        if not (self.refs or self.group_open):
            self.description.append(value)  # text before any ref group: a phrase of its own
            self.in_description = True
            return
        if not value.strip():
            return  # white space keeps a following <box>/<score> attached
        if _SEPARATORS.fullmatch(value):
            self.close_group()  # between the refs of one phrase
            return
        self.close_group()
        stripped = value.lstrip()
        if stripped[:1] in _COLONS:
            stripped = stripped[1:]
        else:
            stripped = stripped.lstrip(" \t\r\n,，、")
        self.description.append(stripped)
        self.in_description = True

    def ref(self, token: _Token) -> None:
        if not token.closed and token.at_end:
            self.close_group()  # cut off by the end of the output: dropped (problem recorded)
            return
        label = token.value.strip()
        if not label:
            self.problems.append(
                f"empty <ref> at offset {token.offset}; its boxes are kept without a label"
            )
        self.open_group(label or None)

    def box(self, token: _Token) -> None:
        if not (self.group_open and self.adjacent and not self.in_description):
            self.open_group(None)
        if not token.closed:
            self.last_boxes = None  # never trust the numbers of an unclosed box
            return
        candidates = _parse_box_content(token.value, token.offset, self.problems)
        for candidate in candidates:
            if candidate is not None:
                self.boxes.append(candidate)
                self.scores.append(None)
        self.last_boxes = candidates

    def score(self, token: _Token) -> None:
        candidates, self.last_boxes = self.last_boxes, None
        if not token.closed:
            return
        if candidates is None or self.in_description:
            self.problems.append(
                f"<score> at offset {token.offset} does not follow a readable <box>; ignored"
            )
            return
        scores = _parse_score_content(token.value, len(candidates), token.offset, self.problems)
        kept = [s for box, s in zip(candidates, scores, strict=True) if box is not None]
        if kept:
            self.scores[len(self.scores) - len(kept) :] = kept


def parse_grounded_text(text: str) -> ParseResult:
    """Read a model's output in the MedRegA grounding grammar; never raises.

    Parameters
    ----------
    text
        The model's raw output.

    Returns
    -------
    ParseResult
        The phrases that could be read (boxes as 0–999 integers, *not* divided
        by 999) and a description of everything dropped.

    Examples
    --------
    >>> r = parse_grounded_text("<ref>right lung</ref><box>[[102, 106, 481, 910]]</box>: Clear.")
    >>> r.phrases[0].refs[0].boxes
    (Box999(x1=102, y1=106, x2=481, y2=910),)
    >>> r.phrases[0].description
    'Clear.'
    """
    if not isinstance(text, str):
        return ParseResult((), (f"model output is not text but {type(text).__name__}",))
    problems: list[str] = []
    builder = _Builder(problems)
    for token in _tokenize(text, problems):
        if token.kind == "text":
            builder.text(token.value)
        else:
            getattr(builder, token.kind)(token)
    builder.close_phrase(more_follows=False)
    if problems:
        logger.debug(
            "grounding parser: %d problem(s) in a %d-character output", len(problems), len(text)
        )
    return ParseResult(tuple(builder.phrases), tuple(problems))


# -- writer ------------------------------------------------------------------------


def _format_score(score: float) -> str:
    return repr(float(score))


def _check_free_text(what: str, value: str) -> None:
    if _TAG.search(value):
        raise GrammarError(f"{what} {value!r} contains a grammar tag; it cannot be written")


def _write_ref(ref: RefBoxes) -> str:
    parts = []
    if ref.label is not None:
        _check_free_text("label", ref.label)
        parts.append(f"<ref>{ref.label}</ref>")
    if ref.boxes:
        parts.append(
            "<box>[" + ", ".join(f"[{b.x1}, {b.y1}, {b.x2}, {b.y2}]" for b in ref.boxes) + "]</box>"
        )
        scores = ref.scores or ()
        given = [s is not None for s in scores]
        if any(given):
            if not all(given):
                raise GrammarError(
                    f"ref {ref.label!r} has scores for some boxes but not all; give all or none"
                )
            if len(scores) == 1:
                parts.append(f"<score>{_format_score(scores[0])}</score>")  # type: ignore[arg-type]
            else:
                parts.append("<score>[" + ", ".join(_format_score(s) for s in scores) + "]</score>")  # type: ignore[arg-type]
    return "".join(parts)


def write_grounded_text(phrases: Iterable[GroundedPhrase], *, language: str) -> str:
    """Write phrases in the MedRegA grounding grammar.

    Parameters
    ----------
    phrases
        The phrases, in order. A phrase without refs may only come first (after
        a description, plain text would run into it), and only the last phrase
        may have an empty description (refs without a description would join
        the next phrase's refs).
    language
        BCP-47 tag; Chinese (``zh*``) gets the full-width colon ``：`` and ``、``
        between refs, as MedRegA writes it; others get ``: `` and ``, ``.

    Returns
    -------
    str
        Text that :func:`parse_grounded_text` reads back into equal phrases.

    Raises
    ------
    GrammarError
        When a label or description holds a grammar tag, or the phrases cannot
        be written so that they read back the same (see above).
    """
    chinese = language.lower().startswith("zh")
    colon, ref_sep, phrase_sep = ("：", "、", "") if chinese else (": ", ", ", " ")
    phrases = list(phrases)
    out: list[str] = []
    for index, phrase in enumerate(phrases):
        if not isinstance(phrase, GroundedPhrase):
            raise GrammarError(
                f"phrases must be GroundedPhrase values, got {type(phrase).__name__}"
            )
        last = index == len(phrases) - 1
        _check_free_text("description", phrase.description)
        if not phrase.refs:
            if index > 0:
                raise GrammarError(
                    "a phrase without refs can only be the first: it would join the "
                    "previous description"
                )
            if not last and phrase.description[-1] in _TRAILING_SEPARATORS:
                raise GrammarError(
                    f"description {phrase.description!r} may not end with a separator"
                )
            out.append(phrase.description)
            continue
        if not last and not phrase.description:
            raise GrammarError(
                "only the last phrase may have no description: its refs would join the next phrase"
            )
        if not last and phrase.description[-1] in _TRAILING_SEPARATORS:
            raise GrammarError(
                f"description {phrase.description!r} may not end with a separator "
                "before another phrase"
            )
        text = ref_sep.join(_write_ref(ref) for ref in phrase.refs)
        if phrase.description:
            text += colon + phrase.description
        out.append(text)
    return phrase_sep.join(out)

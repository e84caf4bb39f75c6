"""What every exporter needs to know about a radiologist's sign-off
(:class:`~exporters.protocol.SignOff`), in one place.

* :func:`signoff_number`: the number that goes into a signed set's DICOM UIDs
  (:func:`exporters.uids.output_uid`), 0 for the model's own outputs;
* :func:`name_parts` / :func:`dicom_person_name`: the verifier's name as written on
  their account (``"Jane Doe"``) split into family and given names, and as a DICOM
  Person Name (PS3.5 §6.2.1.1, ``Doe^Jane``) for the SR's Verifying Observer Name
  and person observer context.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporters.protocol import ExportOptions, SignOff

__all__ = ["NameParts", "dicom_person_name", "name_parts", "signoff_number"]

#: Characters a DICOM PN component may not contain (PS3.5 §6.2: ``^`` and ``=`` delimit
#: components and groups, ``\\`` separates values).
_PN_DELIMITERS = str.maketrans({"^": " ", "=": " ", "\\": " "})
#: Maximum length of one PN component group in characters (PS3.5 Table 6.2-1).
_PN_GROUP_MAX = 64


def signoff_number(options: ExportOptions | SignOff | None) -> int:
    """The sign-off number of ``options`` (or of a :class:`SignOff`): 0 without one."""
    sign_off = options.sign_off if isinstance(options, ExportOptions) else options
    return 0 if sign_off is None else sign_off.number


@dataclass(frozen=True)
class NameParts:
    """A person's name as family name and given names (either may be empty)."""

    family: str
    given: tuple[str, ...]


def name_parts(name: str) -> NameParts:
    """Family and given names of a name written ``"Jane Doe"``, ``"Doe, Jane"`` or
    ``"Doe^Jane"`` (already in DICOM order).

    The last word of ``"Jane Q. Doe"`` is the family name and the others are given names;
    a single word is a family name. The name is not otherwise interpreted (no titles or
    particles are recognised: ``"Anne van Dijk"`` gives family ``"Dijk"``; write
    ``"van Dijk, Anne"`` on the account to keep the particle).
    """
    text = " ".join(name.split())
    if not text:
        raise ValueError("a person's name must not be empty")
    if "^" in text:
        family, _, rest = text.partition("^")
        return NameParts(family.strip(), tuple(p for p in rest.replace("^", " ").split() if p))
    if "," in text:
        family, _, rest = text.partition(",")
        return NameParts(family.strip(), tuple(rest.split()))
    words = text.split(" ")
    return NameParts(words[-1], tuple(words[:-1]))


def dicom_person_name(name: str) -> str:
    """The name as a DICOM PN value (alphabetic group only): ``"Jane Doe"`` → ``"Doe^Jane"``,
    ``"Jane Q. Doe"`` → ``"Doe^Jane^Q."`` (family, given, middle).

    Delimiter characters inside the name are replaced by spaces; a group longer than 64
    characters is refused (:class:`ValueError`) rather than cut.
    """
    parts = name_parts(name)
    family = " ".join(parts.family.translate(_PN_DELIMITERS).split())
    given = [" ".join(g.translate(_PN_DELIMITERS).split()) for g in parts.given]
    components = [family]
    if given:
        components.append(given[0])
    if len(given) > 1:
        components.append(" ".join(given[1:]))
    value = "^".join(components)
    if len(value) > _PN_GROUP_MAX:
        raise ValueError(f"person name is longer than {_PN_GROUP_MAX} characters as a DICOM PN")
    return value

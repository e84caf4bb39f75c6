"""The destination types, keyed by the ``type`` a ``[destinations.NAME]`` section names.

Adding a destination type: a module with its target and its :class:`Destination`,
one entry here, and its settings section (``radground/settings.py``,
``config/radground.toml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from worklist.destinations.dicom_store import DicomStoreDestination
from worklist.destinations.fhir_transaction import FhirTransactionDestination
from worklist.destinations.hl7_mllp import MllpDestination
from worklist.destinations.protocol import Destination
from worklist.destinations.stow import StowDestination
from worklist.errors import WorklistError

__all__ = ["DESTINATION_TYPES", "UnknownDestinationTypeError", "destination_for"]


class UnknownDestinationTypeError(WorklistError, ValueError):
    """A configured destination names a type no destination implements."""


DESTINATION_TYPES: Mapping[str, Destination] = MappingProxyType(
    {
        destination.type: destination
        for destination in (
            DicomStoreDestination(),
            StowDestination(),
            FhirTransactionDestination(),
            MllpDestination(),
        )
    }
)


def destination_for(type_name: str, *, name: str = "") -> Destination:
    """The destination implementing ``type_name``.

    Raises
    ------
    UnknownDestinationTypeError
        No destination has that type; the message names it (and the destination
        ``name`` when given) and lists the known types.
    """
    try:
        return DESTINATION_TYPES[type_name]
    except (KeyError, TypeError):
        where = f"destination {name!r}: " if name else ""
        raise UnknownDestinationTypeError(
            f"{where}unknown destination type {type_name!r}; "
            f"known types: {', '.join(sorted(DESTINATION_TYPES))}"
        ) from None

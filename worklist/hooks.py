"""The index hook the DICOM node calls for every stored instance."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.errors import StoreRefusedError
from dicom_node.scp import StoredInstance
from dicom_node.uids import short_uid
from worklist.index import StudyIndexer

__all__ = ["make_index_hook"]

logger = logging.getLogger(__name__)


def make_index_hook(engine: Engine) -> Callable[[StoredInstance], None]:
    """A hook that indexes each stored instance in its own transaction.

    A database failure refuses the instance with Out of Resources (the sender
    retries later) instead of acknowledging an instance the index does not
    know. Only the exception type is logged: SQLAlchemy messages can quote
    the statement's parameters, i.e. patient data.
    """

    indexer = StudyIndexer(engine)

    def on_stored(instance: StoredInstance) -> None:
        try:
            indexed = indexer.record(instance)
        except SQLAlchemyError as exc:
            logger.error(
                "Index write failed for instance %s (%s)",
                short_uid(instance.sop_instance_uid),
                type(exc).__name__,
            )
            raise StoreRefusedError("study index unavailable", transient=True) from None
        if indexed.reopened:
            logger.info(
                "Study %s received more instances after it was ready: revision %d opened",
                short_uid(instance.study_instance_uid), indexed.revision,
            )

    return on_stored

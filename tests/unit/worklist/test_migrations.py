"""The Alembic migrations create exactly the schema the models declare."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from worklist import accounts_models, jobs_models, models, review_models  # noqa: F401 - registers the tables
from worklist.db import Base
from worklist.migrate import current_revision


def test_migrated_schema_matches_models(migrated_engine):
    assert current_revision(migrated_engine) is not None
    with migrated_engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []

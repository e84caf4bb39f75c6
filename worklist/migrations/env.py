"""Alembic environment: runs RadGround's migrations on the engine it is given.

Used through :func:`worklist.migrate.upgrade_database`; ``radground db upgrade``
calls that. The URL or connection comes from the Alembic config attributes,
never from the environment.
"""

from alembic import context
from sqlalchemy import create_engine

from worklist import accounts_models, jobs_models, models, review_models  # noqa: F401 - registers the tables
from worklist.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError(
            "alembic: no sqlalchemy.url in the configuration and no connection given"
        )
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations()

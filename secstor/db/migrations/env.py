"""Alembic environment: the engine comes from the caller (see secstor.db.migrate)."""

from alembic import context

from secstor.db.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` CLI use: SECSTOR_DATABASE_URL or the embedded default
    from secstor.config import load_config
    from secstor.db.engine import make_engine

    engine = make_engine(load_config().resolved_database_url)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

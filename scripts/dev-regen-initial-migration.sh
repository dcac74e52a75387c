#!/usr/bin/env bash
# Development only, until the first release: rewrite migration 0001 from the models.
# After a release, schema changes are new Alembic revisions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f secstor/db/migrations/versions/0001_*.py
python - <<'PY'
import tempfile
from alembic import command
from secstor.db.engine import make_engine
from secstor.db.migrate import alembic_config
d = tempfile.mkdtemp()
command.revision(alembic_config(make_engine(f"sqlite:///{d}/x.db")), message="initial schema",
                 autogenerate=True, rev_id="0001")
PY

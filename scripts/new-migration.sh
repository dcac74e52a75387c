#!/usr/bin/env bash
# Add an Alembic revision for a model change: `bash scripts/new-migration.sh "add foo column"`.
# It upgrades a scratch SQLite database to the current head, then autogenerates the difference
# between it and the models. Review the generated file (Alembic cannot see renames) and test it
# on SQLite, PostgreSQL and MariaDB: released revisions are never edited, only added to.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 \"what the revision changes\"" >&2; exit 2; }
.venv/bin/python - "$1" <<'PY'
import sys
import tempfile

from alembic import command
from secstor.db.engine import make_engine
from secstor.db.migrate import alembic_config, upgrade

engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/scratch.db")
upgrade(engine)
command.revision(alembic_config(engine), message=sys.argv[1], autogenerate=True)
PY

#!/usr/bin/env bash
# README's first command: install secstor into ./.venv when needed, then run `secstor serve`.
# Arguments go to `secstor serve`, e.g. `bash scripts/serve.sh --home /srv/secstor --port 8081`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$REPO/scripts/venv.sh"
ensure_venv
exec "$VENV/bin/secstor" serve "$@"

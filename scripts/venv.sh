# Sourced by serve.sh and test.sh: create ./.venv and install secstor into it, only when needed.
# Needs REPO (the repository root). `ensure_venv` installs the package; `ensure_venv test` adds
# the test extras. constraints.txt pins every transitive dependency too. A stamp in .venv holds
# the hash of pyproject.toml and constraints.txt, so a second run skips pip until they change.

VENV="$REPO/.venv"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "error: root is needed for: $*" >&2; return 1
  fi
}

ensure_venv() {
  local extra="${1:-}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    if ! "${PYTHON:-python3}" -m venv "$VENV"; then
      # Debian ships venv's pip bootstrap in a separate package.
      echo "installing python3-venv" >&2
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "${PYTHON:-python3}" -m venv --clear "$VENV"
    fi
  fi
  local want stamp="$VENV/.secstor-installed${extra:+-$extra}"
  want="$(cat "$REPO/pyproject.toml" "$REPO/constraints.txt" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing secstor${extra:+[$extra]} with its pinned dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$REPO/constraints.txt" -e "$REPO${extra:+[$extra]}"
    echo "$want" >"$stamp"
    # Extras come on top of the package's own dependencies, which are now installed too.
    [ -z "$extra" ] || echo "$want" >"$VENV/.secstor-installed"
  fi
}

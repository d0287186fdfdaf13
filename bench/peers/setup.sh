#!/usr/bin/env bash
# Create bench/.peers-venv with the peer engines and py-spy (idempotent: a stamp file records
# what was installed). Never a project dependency: the project's .venv is not touched.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/../.peers-venv"
PY="${PYTHON:-python3}"
# Pinned to the newest releases of the lines the issue names (checked with `pip index versions`).
REQS=("dbos==3.4.0" "llama-index-workflows==2.26.1" "py-spy==0.4.3")
STAMP="$VENV/.peers-installed"
WANT="${REQS[*]}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
echo "bench: installing peers into $VENV (${REQS[*]}); once only" >&2
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}" >&2
echo "$WANT" > "$STAMP"

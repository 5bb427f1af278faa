#!/usr/bin/env bash
# Creates .venv/ in the repo root and installs the pins of requirements.txt into it.
# Idempotent: with everything present it only checks versions and returns in a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
REQ=requirements.txt

fairseq_pin=$(grep -E '^fairseq-fixed==' "$REQ")
torch_pin=$(grep -E '^torch==' "$REQ")

installed_ok() {
  [ -x "$PY" ] || return 1
  "$PY" - "$REQ" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if pinned and have.split("+")[0] != pinned:
        sys.exit(1)
import fairseq_ext.plugin  # editable install of this repo, registered with a fairseq that imports
sys.exit(0)
PYEOF
}

if installed_ok; then
  echo "setup: $VENV is up to date"
  exit 0
fi

# pip warns once per package about an absent local index folder of this machine's pip config: noise.
pip_install() { "$PY" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

echo "setup: installing into $VENV (first time: about 4 minutes, most of it building fairseq)"
[ -x "$PY" ] || python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
# torch alone first, so nothing after it can resolve to a different (CUDA) build.
pip_install "$torch_pin"
grep -vE '^(fairseq-fixed|torch)==' "$REQ" > "$VENV/requirements.deps.txt"
pip_install -r "$VENV/requirements.deps.txt" "$torch_pin"
pip_install --no-build-isolation --no-deps "$fairseq_pin"
pip_install --no-build-isolation --no-deps -e .
if ! installed_ok; then
  echo "setup: FAILED: $VENV does not match $REQ after installing; see the pip output above" >&2
  exit 1
fi
echo "setup: done"

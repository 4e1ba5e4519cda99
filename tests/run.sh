#!/usr/bin/env bash
# Run the lint and the test suite; sets the environment up first when needed.
#   bash tests/run.sh                 everything (what CI runs)
#   bash tests/run.sh -m "not slow"   the quick tier for development, under 2 minutes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash setup.sh
export LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
VENV="${COLLABLOOP_VENV:-.venv}"
if [ -x "$VENV/bin/ruff" ]; then
  "$VENV/bin/ruff" check --quiet .  # lint first (pyproject.toml's configuration): seconds, not minutes
else  # an environment setup.sh did not install (COLLABLOOP_USE_EXISTING) may lack it
  echo "tests/run.sh: no ruff in $VENV: lint skipped"
fi
exec "$VENV/bin/python" -m pytest "$@"

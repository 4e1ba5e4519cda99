#!/usr/bin/env bash
# Run the test suite; sets the environment up first when needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash setup.sh
export LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "${COLLABLOOP_VENV:-.venv}/bin/python" -m pytest "$@"

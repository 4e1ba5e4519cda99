#!/usr/bin/env bash
# The GPU path, checked in one prepared script on a machine with one NVIDIA GPU (bench/gpu_check.py does
# the work; its figures go to bench/results/gpu_check.json):
#   - DPO full fine-tuning and DPO with LoRA, under accelerate launch and DeepSpeed ZeRO-2, in bf16 with
#     gradient checkpointing, on a random model built from the embedded model's config (steps/s, peak
#     GPU memory, whether a second copy of the model was loaded as the reference);
#   - where vLLM is installed: the policy's engine and a simulator engine of another model on the one GPU,
#     each with its share; and one loop iteration of configs/tiny.yaml on the same random model.
#
#   bash bench/gpu_check.sh --prepare    on a machine with a package registry (this one): the wheels the GPU
#                                        machine may lack (TRL, DeepSpeed, datasets, PEFT and their small
#                                        dependencies, about 8 MB) and the model's config and tokenizer go to
#                                        bench/gpu_check_files/, which travels with the working tree;
#   bash bench/gpu_check.sh              on the GPU machine, which needs only Python with torch, transformers
#                                        and accelerate: no registry, nothing downloaded; about 5 minutes.
# GPU_CHECK_EXTRA_WHEELS="pyarrow==26.0.1 pandas==3.1.1" adds wheels to --prepare for a machine that lacks
# datasets' own dependencies too (pyarrow alone is about 40 MB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FILES=bench/gpu_check_files
# The versions setup.sh installs (requirements/), for the packages that travel.
pinned() { grep -hE "^$1==" requirements/common.txt requirements/lock-cpu.txt | head -n 1; }

if [ "${1:-}" = "--prepare" ]; then
  rm -rf "$FILES" && mkdir -p "$FILES/wheels" "$FILES/model"
  PIP=".venv/bin/pip"
  wheels=()
  for package in trl datasets peft dill multiprocess xxhash hjson py-cpuinfo msgpack einops pydantic pydantic_core \
      annotated-types typing-inspection ${GPU_CHECK_EXTRA_WHEELS:-}; do
    case "$package" in *==*) wheels+=("$package") ;; *) wheels+=("$(pinned "$package")") ;; esac
  done
  # For the GPU machine's Python (../shared/research/gpu.md: 3.12 on x86_64 Linux), binary wheels only.
  "$PIP" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "${GPU_CHECK_PYTHON:-3.12}" --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$FILES/wheels" "${wheels[@]}" 2> >(grep -v "is ignored" >&2)
  # DeepSpeed is published as source only: built here into a pure-Python wheel (its ops compile on first use).
  "$PIP" wheel -q --disable-pip-version-check --no-deps -w "$FILES/wheels" "$(pinned deepspeed)" 2> >(grep -v "is ignored" >&2)
  cp models/SmolLM2-135M-Instruct/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json} "$FILES/model/"
  cp models/SmolLM2-135M-Instruct/chat_template.jinja "$FILES/model/" 2>/dev/null || true
  echo "gpu_check: $(du -sh "$FILES" | cut -f1) in $FILES ($(ls "$FILES/wheels" | wc -l) wheels); bring it along"
  exit 0
fi

[ -d "$FILES/wheels" ] || { echo "gpu_check: no $FILES; run 'bash bench/gpu_check.sh --prepare' where a package" \
  "registry is reachable, and bring the folder along" >&2; exit 1; }
PYTHON="${GPU_CHECK_PYTHON_BIN:-python3}"
VENV="${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/collabloop-gpu-check-venv}"
# An environment that sees the machine's own packages (torch, transformers...) and adds only what it lacks.
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
  # A Python that is itself in a virtual or conda environment: that environment's packages too.
  "$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
    > "$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/machine-packages.pth"
fi
# Each wheel brought along whose release the environment lacks, without resolving dependencies (pip's resolver
# would ask an index for what torch's metadata names); what is still missing shows as a failed import below.
"$VENV/bin/python" - "$FILES/wheels" <<'PY'
import subprocess, sys
from importlib import metadata
from pathlib import Path
missing = []
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        if metadata.version(name) == version:
            continue
    except metadata.PackageNotFoundError:
        pass
    missing.append(str(wheel))
if missing:
    print(f"gpu_check: installing {len(missing)} wheel(s) the environment lacks: " + ", ".join(Path(m).name.split("-")[0] for m in missing))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-deps", *missing], check=True)
PY
"$VENV/bin/python" -c "import trl, deepspeed, datasets, peft, transformers, accelerate" || {
  echo "gpu_check: the environment cannot import what DPO needs (above); bring the missing wheels along" \
    "(GPU_CHECK_EXTRA_WHEELS at --prepare)" >&2; exit 1; }
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/python" bench/gpu_check.py --files "$FILES" "$@"

#!/usr/bin/env bash
# Every benchmark in sequence, on an otherwise idle machine (each compares two ways of doing the same work in
# the same run, but a job sharing the cores skews one side more than the other). Results: bench/results/*.json
# and bench/results/run_all.log; BENCHMARKS.md quotes them with the machine they came from.
#   bash bench/run_all.sh [--quick]    (--quick: smaller workloads, about half the time)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash setup.sh >/dev/null
PY="${COLLABLOOP_VENV:-.venv}/bin/python"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false LITELLM_LOCAL_MODEL_COST_MAP=True
mkdir -p bench/results
if [ "${1:-}" = --quick ]; then
  GEN=(--contexts 32 --num_candidates 4 --max_new_tokens 96); RM=(--conversations 32); DPO=(--pairs 16)
  SIM=(--contexts 8); DEMO=(--max_tasks 8)
else
  GEN=(--contexts 64 --num_candidates 4 --max_new_tokens 128); RM=(--conversations 64); DPO=(--pairs 32)
  SIM=(--contexts 16); DEMO=()
fi
{
  echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(lscpu | sed -n 's/^Model name: *//p')"
  "$PY" bench/generation_vs_raw_vllm.py "${GEN[@]}"
  "$PY" bench/simulate_batching.py "${SIM[@]}"
  "$PY" bench/simulator_backends.py "${SIM[@]}"
  "$PY" bench/simulation_schedule.py "${SIM[@]}"
  "$PY" bench/reward_model_batching.py "${RM[@]}"
  "$PY" bench/dpo_precompute_ref.py "${DPO[@]}"
  "$PY" bench/demo_iteration.py --config configs/demo.yaml "${DEMO[@]}"
} 2>&1 | tee bench/results/run_all.log | grep -v -E "WARNING|it/s\]|s/it\]|^\s*$"

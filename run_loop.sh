#!/usr/bin/env bash
# Iterative DPO with multiturn-aware rewards:
#   contexts -> generate -> simulate -> annotate -> pairs -> train (DPO, KTO, CPO, SimPO
#   or ORPO), N iterations; full-conversation evaluation before and after each; a report.
# Usage: bash run_loop.sh [CONFIG.yaml] [--loop_key value ...]
#   e.g. bash run_loop.sh configs/demo.yaml --num_iterations 1 --run_dir data/runs/try
# Sets itself up (setup.sh) when needed. Stages whose output is complete and
# was made from the same inputs and config are skipped, so rerunning after a
# crash or Ctrl-C resumes where it stopped. The stages of an iteration, and how
# each runs (its arguments, shards, GPUs or cores, accelerate launch, the
# simulator server when loop.simulator_backend is server), come from
# collabloop/pipeline.py through `python -m collabloop.driver`; run one stage by
# hand with the same command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CONFIG="${1:-configs/demo.yaml}"
[ $# -gt 0 ] && shift
bash setup.sh
PY="${COLLABLOOP_VENV:-.venv}/bin/python"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false LITELLM_LOCAL_MODEL_COST_MAP=True
# Each stage writes vLLM's, DeepSpeed's and torch's output to a log beside its output and shows its own
# start line, progress bar and end line; COLLABLOOP_QUIET=0 shows everything.
export COLLABLOOP_QUIET="${COLLABLOOP_QUIET:-1}"

# Validates every section of the config, writes <run_dir>/config.yaml, prints LOOP_* settings.
eval "$("$PY" -m collabloop.loop env --config "$CONFIG" "$@")"
RUN_DIR="$LOOP_RUN_DIR"
# One owner per run folder (collabloop/run_lock.py): the lock is taken on descriptor 9, which this script
# holds until it ends, however it ends; a second run on the folder stops here and names this one.
exec 9>>"$RUN_DIR/run.lock"
"$PY" -m collabloop.run_lock take --run_dir "$RUN_DIR" --fd 9 --owner_pid $$ --command "run_loop.sh $CONFIG $*"
export COLLABLOOP_RUN_OWNER="$(cd "$RUN_DIR" && pwd -P)"  # the stages this script starts run under its lock
driver() { "$PY" -m collabloop.driver "$@" --run_dir "$RUN_DIR"; }
trap 'driver stop_server; rm -f "$RUN_DIR/run.owner.json"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Iteration 0 evaluates the initial model on the held-out openings; each later one trains and evaluates.
for ((i = 0; i <= LOOP_NUM_ITERATIONS; i++)); do
  stages=$(driver stages --iteration "$i")
  [ -n "$stages" ] || continue
  driver heading --iteration "$i"
  for stage in $stages; do
    driver run "$stage" --iteration "$i"
  done
  [ "$i" = 0 ] || "$PY" -m collabloop.loop summary --iter_dir "$RUN_DIR/iter_$i"
done
driver stop_server
COLLABLOOP_LOG_LEVEL=WARNING "$PY" -m collabloop.report --run_dir "$RUN_DIR"  # prints its headline and path
if [ "$LOOP_NUM_ITERATIONS" = 0 ]; then
  echo "done: evaluated $LOOP_INITIAL_MODEL in $RUN_DIR (no training: num_iterations 0)"
else
  echo "done: $LOOP_NUM_ITERATIONS iterations in $RUN_DIR; final model: $RUN_DIR/iter_$LOOP_NUM_ITERATIONS/model"
fi

#!/usr/bin/env bash
# Iterative DPO with multiturn-aware rewards:
#   contexts -> generate -> simulate -> annotate -> pairs -> DPO, N iterations.
# Usage: bash run_loop.sh [CONFIG.yaml] [--loop_key value ...]
#   e.g. bash run_loop.sh configs/demo.yaml --num_iterations 1 --run_dir data/runs/try
# Sets itself up (setup.sh) when needed. Stages whose output is complete and
# was made from the same inputs and config are skipped, so rerunning after a
# crash or Ctrl-C resumes where it stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CONFIG="${1:-configs/demo.yaml}"
[ $# -gt 0 ] && shift
bash setup.sh
VENV="${COLLABLOOP_VENV:-.venv}"
PY="$VENV/bin/python"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false LITELLM_LOCAL_MODEL_COST_MAP=True

# Validates every section of the config, writes <run_dir>/config.yaml, prints LOOP_* settings.
env_lines=$("$PY" -m collabloop.loop env --config "$CONFIG" "$@")
eval "$env_lines"
RUN_DIR="$LOOP_RUN_DIR"
CACHE="$RUN_DIR/llm_cache.sqlite"

NUM_PROCESSES="$LOOP_NUM_PROCESSES"
if [ "$NUM_PROCESSES" = 0 ]; then
  NUM_PROCESSES=$( (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | wc -l) || echo 0)
  [ "$NUM_PROCESSES" -gt 0 ] || NUM_PROCESSES=2  # CPU-only: ZeRO-2 over 2 gloo processes
fi

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "stopping simulator server (pid $SERVER_PID)"
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SIM_ARGS=()
JUDGE_ARGS=()
if [ -n "$LOOP_SIMULATOR_MODEL_PATH" ]; then
  PORT="$LOOP_SIMULATOR_PORT"
  if "$PY" -c "from collabloop.server import is_healthy; import sys; sys.exit(0 if is_healthy($PORT) else 1)"; then
    echo "error: something already answers on 127.0.0.1:$PORT; set loop.simulator_port to a free port" >&2
    exit 1
  fi
  echo "starting simulator server: $LOOP_SIMULATOR_MODEL_PATH on 127.0.0.1:$PORT (log: $RUN_DIR/simulator_server.log)"
  # setsid: the server leads its own process group, so stopping it stops its workers too.
  setsid "$PY" -m collabloop.server --model "$LOOP_SIMULATOR_MODEL_PATH" --port "$PORT" \
    --served_name "$LOOP_SIMULATOR_SERVED_NAME" >>"$RUN_DIR/simulator_server.log" 2>&1 &
  SERVER_PID=$!
  for waited in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "error: simulator server exited during startup; see $RUN_DIR/simulator_server.log" >&2
      SERVER_PID=""; exit 1
    fi
    "$PY" -c "from collabloop.server import is_healthy; import sys; sys.exit(0 if is_healthy($PORT) else 1)" && break
    sleep 1
    [ "$waited" -lt 300 ] || { echo "error: simulator server not healthy after 300s" >&2; exit 1; }
  done
  echo "simulator server healthy (pid $SERVER_PID)"
  API_BASE="http://127.0.0.1:$PORT/v1"
  SIM_ARGS=(--simulator_model "hosted_vllm/$LOOP_SIMULATOR_SERVED_NAME" --simulator_api_base "$API_BASE")
  JUDGE_ARGS=(--judge_model "hosted_vllm/$LOOP_SIMULATOR_SERVED_NAME" --judge_api_base "$API_BASE")
fi

POLICY="$LOOP_INITIAL_MODEL"
for ((i = 1; i <= LOOP_NUM_ITERATIONS; i++)); do
  ITER="$RUN_DIR/iter_$i"
  mkdir -p "$ITER"
  echo "=== iteration $i/$LOOP_NUM_ITERATIONS: policy $POLICY ==="
  CONTINUE=()
  if [ "$i" -gt 1 ] && [ "$LOOP_CONTINUE_CONVERSATIONS" = True ]; then
    CONTINUE=(--continue_from "$RUN_DIR/iter_$((i - 1))/rewards.jsonl")
  fi
  "$PY" simulate/make_contexts.py --config "$CONFIG" --tasks_path "$LOOP_TRAIN_TASKS" --iteration "$i" \
    --output_path "$ITER/contexts.jsonl" --llm_cache_path "$CACHE" "${SIM_ARGS[@]}" "${CONTINUE[@]}"
  "$PY" generation/generate.py --config "$CONFIG" --model "$POLICY" \
    --contexts_path "$ITER/contexts.jsonl" --output_path "$ITER/generations.jsonl"
  "$PY" simulate/simulate_futures.py --config "$CONFIG" --model "$POLICY" --tasks_path "$LOOP_TRAIN_TASKS" \
    --generations_path "$ITER/generations.jsonl" --output_path "$ITER/simulations.jsonl" \
    --llm_cache_path "$CACHE" "${SIM_ARGS[@]}"
  "$PY" annotate_data/annotate.py --config "$CONFIG" --tokenizer "$POLICY" --tasks_path "$LOOP_TRAIN_TASKS" \
    --simulations_path "$ITER/simulations.jsonl" --output_path "$ITER/rewards.jsonl" \
    --llm_cache_path "$CACHE" "${JUDGE_ARGS[@]}"
  "$PY" dpo_iteration/pairs.py --config "$CONFIG" \
    --rewards_path "$ITER/rewards.jsonl" --output_path "$ITER/pairs.jsonl"
  "$VENV/bin/accelerate" launch --config_file "$LOOP_ACCELERATE_CONFIG" --num_processes "$NUM_PROCESSES" \
    dpo_iteration/run_dpo.py --config "$CONFIG" --pairs_path "$ITER/pairs.jsonl" \
    --model_name_or_path "$POLICY" --ref_model "$LOOP_INITIAL_MODEL" --output_dir "$ITER/model"
  "$PY" -m collabloop.loop summary --iter_dir "$ITER"
  POLICY="$ITER/model"
done
echo "done: $LOOP_NUM_ITERATIONS iterations in $RUN_DIR; final model: $POLICY"

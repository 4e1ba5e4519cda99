#!/usr/bin/env bash
# Iterative DPO with multiturn-aware rewards:
#   contexts -> generate -> simulate -> annotate -> pairs -> train (DPO, KTO, CPO, SimPO
#   or ORPO), N iterations; full-conversation evaluation before and after each; a report.
# Usage: bash run_loop.sh [CONFIG.yaml] [--loop_key value ...]
#   e.g. bash run_loop.sh configs/demo.yaml --num_iterations 1 --run_dir data/runs/try
# Sets itself up (setup.sh) when needed. Stages whose output is complete and
# was made from the same inputs and config are skipped, so rerunning after a
# crash or Ctrl-C resumes where it stopped. The local simulator and judge run
# inside the stages that call them; with loop.simulator_backend server, a server
# starts when the first stage that calls it has work to do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CONFIG="${1:-configs/demo.yaml}"
[ $# -gt 0 ] && shift
bash setup.sh
VENV="${COLLABLOOP_VENV:-.venv}"
PY="$VENV/bin/python"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false LITELLM_LOCAL_MODEL_COST_MAP=True
# Each stage writes vLLM's, DeepSpeed's and torch's output to a log beside its output and shows its own
# start line, progress bar and end line; COLLABLOOP_QUIET=0 shows everything.
export COLLABLOOP_QUIET="${COLLABLOOP_QUIET:-1}"

# Validates every section of the config, writes <run_dir>/config.yaml, prints LOOP_* settings.
env_lines=$("$PY" -m collabloop.loop env --config "$CONFIG" "$@")
eval "$env_lines"
RUN_DIR="$LOOP_RUN_DIR"
CACHE="$RUN_DIR/llm_cache.sqlite"

NUM_GPUS=$( (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | wc -l) || echo 0)
NUM_PROCESSES="$LOOP_NUM_PROCESSES"
if [ "$NUM_PROCESSES" = 0 ]; then
  NUM_PROCESSES="$NUM_GPUS"
  [ "$NUM_PROCESSES" -gt 0 ] || NUM_PROCESSES=2  # CPU-only: ZeRO-2 over 2 gloo processes
fi
NUM_SHARDS="$LOOP_NUM_SHARDS"
if [ "$NUM_SHARDS" = 0 ]; then
  NUM_SHARDS="$NUM_GPUS"
  [ "$NUM_SHARDS" -gt 0 ] || NUM_SHARDS=1
fi
if [ "$NUM_GPUS" -gt 0 ] && [ "$NUM_SHARDS" -gt "$NUM_GPUS" ]; then
  echo "error: loop.num_shards=$NUM_SHARDS but this machine has $NUM_GPUS GPUs; each shard's vLLM engine needs a GPU of its own" >&2
  exit 1
fi

# per_record OUTPUT SCRIPT ARGS...: run a per-record stage; with NUM_SHARDS > 1, one process per shard
# (each on its own GPU, or its own share of the CPU cores), then merge the shards into OUTPUT and rerun
# the unsharded command, which finds OUTPUT up to date (and, for evaluate, writes the summary).
per_record() {
  local output="$1"; shift
  if [ "$NUM_SHARDS" -le 1 ]; then run_stage "$@"; return; fi
  # The merged output up to date: nothing for the shards to do, whatever became of their own files.
  if "$PY" "$@" --check_up_to_date >/dev/null 2>&1; then "$PY" "$@"; return; fi
  if names_server "$@"; then start_server; fi
  local pids=() logs=() failed=0 s cores per
  cores=$(nproc)
  per=$(( cores / NUM_SHARDS )); [ "$per" -gt 0 ] || per=1
  mkdir -p "$(dirname "$output")"
  echo "[$(basename "$1" .py)] $NUM_SHARDS shards (logs: ${output%.jsonl}.shard<i>-of-$NUM_SHARDS.log)"
  for ((s = 0; s < NUM_SHARDS; s++)); do
    local log="${output%.jsonl}.shard$s-of-$NUM_SHARDS.log" place=()
    if [ "$NUM_GPUS" -gt 0 ]; then
      place=(env "CUDA_VISIBLE_DEVICES=$s")
    elif command -v taskset >/dev/null; then
      place=(taskset -c "$(( (s * per) % cores ))-$(( (s * per) % cores + per - 1 ))")
    fi
    logs+=("$log")
    "${place[@]}" "$PY" "$@" --num_shards "$NUM_SHARDS" --shard_index "$s" >"$log" 2>&1 &
    pids+=($!)
  done
  for ((s = 0; s < NUM_SHARDS; s++)); do
    if wait "${pids[$s]}"; then
      echo "  shard $s: $(tail -n 1 "${logs[$s]}")"
    else
      failed=1
      echo "error: shard $s failed; the end of ${logs[$s]}:" >&2
      tail -n 20 "${logs[$s]}" >&2
    fi
  done
  [ "$failed" = 0 ] || exit 1
  "$PY" -m collabloop.shards merge --output_path "$output" --num_shards "$NUM_SHARDS"
  "$PY" "$@"
}

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
ASSISTANT_ARGS=()
API_BASE=""
if [ -n "$LOOP_SIMULATOR_MODEL_PATH" ] && [ "$LOOP_SIMULATOR_BACKEND" = in_process ]; then
  # The simulator and judge run inside each stage that calls them: no server to start.
  SIM_ARGS=(--simulator_model "local/$LOOP_SIMULATOR_MODEL_PATH")
  JUDGE_ARGS=(--judge_model "local/$LOOP_SIMULATOR_MODEL_PATH")
elif [ -n "$LOOP_SIMULATOR_MODEL_PATH" ]; then
  PORT="$LOOP_SIMULATOR_PORT"
  API_BASE="http://127.0.0.1:$PORT/v1"
  SIM_ARGS=(--simulator_model "hosted_vllm/$LOOP_SIMULATOR_SERVED_NAME" --simulator_api_base "$API_BASE")
  JUDGE_ARGS=(--judge_model "hosted_vllm/$LOOP_SIMULATOR_SERVED_NAME" --judge_api_base "$API_BASE")
  ASSISTANT_ARGS=(--assistant_model "hosted_vllm/$LOOP_SIMULATOR_SERVED_NAME" --assistant_api_base "$API_BASE")
fi

# The run's budget for simulator and judge calls (loop.max_cost_usd), to every stage that calls them; the
# spend is kept in $CACHE, so each stage and rerun starts from what the run already spent.
BUDGET_ARGS=()
[ "$LOOP_MAX_COST_USD" = None ] || BUDGET_ARGS=(--max_cost_usd "$LOOP_MAX_COST_USD")

start_server() {  # the simulator/judge server, once per run
  [ -n "$API_BASE" ] && [ -z "$SERVER_PID" ] || return 0
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
}

# names_server SCRIPT ARGS...: whether a stage's arguments name the server (it calls the simulator or judge).
names_server() { [ -n "$API_BASE" ] && case " $* " in *" $API_BASE "*) return 0 ;; *) return 1 ;; esac; }

# server_for SCRIPT ARGS...: before a stage whose arguments name the server, start it, unless the stage's
# output is up to date (asked with --check_up_to_date, which does no work): rerunning a finished loop
# starts no server. Any other answer, an error included, starts it; the stage itself then reports.
server_for() {
  [ -z "$SERVER_PID" ] && names_server "$@" || return 0
  "$PY" "$@" --check_up_to_date >/dev/null 2>&1 || start_server
}

run_stage() { server_for "$@"; "$PY" "$@"; }  # run_stage SCRIPT ARGS...: one unsharded stage

# train SCRIPT ARGS...: a trainer under accelerate launch, unless its model is up to date (asked with
# --check_up_to_date in one plain process, which is quicker than starting every rank to learn it).
train() {
  local answer
  if answer=$("$PY" "$@" --check_up_to_date 2>/dev/null); then echo "$answer"; return; fi
  # Each rank's share of the cores, said here: torchrun would pick 1 and print a warning about it.
  local threads=$(( $(nproc) / NUM_PROCESSES )); [ "$threads" -gt 0 ] || threads=1
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" \
    "$VENV/bin/accelerate" launch --config_file "$LOOP_ACCELERATE_CONFIG" --num_processes "$NUM_PROCESSES" "$@"
}

evaluate() {  # evaluate MODEL ITERATION: full conversations on the held-out tasks
  [ -n "$LOOP_EVAL_TASKS" ] || return 0
  per_record "$RUN_DIR/iter_$2/eval/conversations.jsonl" \
    simulate/evaluate.py --config "$CONFIG" --model "$1" --iteration "$2" --tasks_path "$LOOP_EVAL_TASKS" \
    --contexts_path "$RUN_DIR/eval_contexts.jsonl" --output_dir "$RUN_DIR/iter_$2/eval" \
    --tokenizer "$LOOP_INITIAL_MODEL" --llm_cache_path "$CACHE" "${SIM_ARGS[@]}" "${JUDGE_ARGS[@]}" \
    "${BUDGET_ARGS[@]}"
}

if [ -n "$LOOP_EVAL_TASKS" ]; then
  echo "=== evaluation of the initial model ==="
  # The same openings for every model, so iterations are compared on equal terms.
  run_stage simulate/make_contexts.py --config "$CONFIG" --tasks_path "$LOOP_EVAL_TASKS" --iteration 0 \
    --output_path "$RUN_DIR/eval_contexts.jsonl" --llm_cache_path "$CACHE" --continue_from "" "${SIM_ARGS[@]}" \
    "${BUDGET_ARGS[@]}"
  evaluate "$LOOP_INITIAL_MODEL" 0
fi

POLICY="$LOOP_INITIAL_MODEL"
for ((i = 1; i <= LOOP_NUM_ITERATIONS; i++)); do
  ITER="$RUN_DIR/iter_$i"
  mkdir -p "$ITER"
  echo "=== iteration $i/$LOOP_NUM_ITERATIONS: policy $POLICY, $LOOP_ALGORITHM ==="
  CONTINUE=()
  if [ "$i" -gt 1 ] && [ "$LOOP_CONTINUE_CONVERSATIONS" = True ] && [ "$LOOP_ALGORITHM" != grpo ]; then
    CONTINUE=(--continue_from "$RUN_DIR/iter_$((i - 1))/rewards.jsonl")
  fi
  run_stage simulate/make_contexts.py --config "$CONFIG" --tasks_path "$LOOP_TRAIN_TASKS" --iteration "$i" \
    --output_path "$ITER/contexts.jsonl" --llm_cache_path "$CACHE" "${SIM_ARGS[@]}" "${CONTINUE[@]}" \
    "${BUDGET_ARGS[@]}"
  if [ "$LOOP_ALGORITHM" = grpo ]; then
    # Online: the trainer samples replies itself and rewards each by simulated futures and the metrics.
    GRPO=(dpo_iteration/train_grpo.py --config "$CONFIG" --contexts_path "$ITER/contexts.jsonl"
      --tasks_path "$LOOP_TRAIN_TASKS" --model_name_or_path "$POLICY" --output_dir "$ITER/model"
      --tokenizer "$POLICY" --llm_cache_path "$CACHE" "${SIM_ARGS[@]}" "${JUDGE_ARGS[@]}" "${ASSISTANT_ARGS[@]}"
      "${BUDGET_ARGS[@]}")
    server_for "${GRPO[@]}"
    train "${GRPO[@]}"
    POLICY="$ITER/model"
    evaluate "$POLICY" "$i"
    "$PY" -m collabloop.loop summary --iter_dir "$ITER"
    continue
  fi
  per_record "$ITER/generations.jsonl" generation/generate.py --config "$CONFIG" --model "$POLICY" \
    --contexts_path "$ITER/contexts.jsonl" --output_path "$ITER/generations.jsonl"
  if [ "$LOOP_USE_SIMULATION" = True ]; then
    per_record "$ITER/simulations.jsonl" \
      simulate/simulate_futures.py --config "$CONFIG" --model "$POLICY" --tasks_path "$LOOP_TRAIN_TASKS" \
      --generations_path "$ITER/generations.jsonl" --output_path "$ITER/simulations.jsonl" \
      --llm_cache_path "$CACHE" "${SIM_ARGS[@]}" "${BUDGET_ARGS[@]}"
    SCORED=(--simulations_path "$ITER/simulations.jsonl")
  else
    SCORED=(--simulations_path "$ITER/generations.jsonl" --without_futures true)
  fi
  per_record "$ITER/rewards.jsonl" \
    annotate_data/annotate.py --config "$CONFIG" --tokenizer "$POLICY" --tasks_path "$LOOP_TRAIN_TASKS" \
    "${SCORED[@]}" --output_path "$ITER/rewards.jsonl" --llm_cache_path "$CACHE" "${JUDGE_ARGS[@]}" \
    "${BUDGET_ARGS[@]}"
  "$PY" dpo_iteration/pairs.py --config "$CONFIG" \
    --rewards_path "$ITER/rewards.jsonl" --output_path "$ITER/pairs.jsonl"
  REF="$LOOP_INITIAL_MODEL"
  [ "$LOOP_REFERENCE" = previous ] && REF="$POLICY"
  train dpo_iteration/train_preference.py --algorithm "$LOOP_ALGORITHM" --config "$CONFIG" \
    --pairs_path "$ITER/pairs.jsonl" --rewards_path "$ITER/rewards.jsonl" \
    --model_name_or_path "$POLICY" --ref_model "$REF" --output_dir "$ITER/model"
  POLICY="$ITER/model"
  evaluate "$POLICY" "$i"
  "$PY" -m collabloop.loop summary --iter_dir "$ITER"
done
stop_server
COLLABLOOP_LOG_LEVEL=WARNING "$PY" -m collabloop.report --run_dir "$RUN_DIR"  # prints its headline and path
echo "done: $LOOP_NUM_ITERATIONS iterations in $RUN_DIR; final model: $POLICY"

"""Several trainer runs in one `accelerate launch` (tests only): the same entry scripts, one after another.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 tests/train_many.py RUNS.json

RUNS.json is a list of {"script": "dpo_iteration/train_preference.py", "argv": [...]}. Each run calls the
script's own `main(argv)`, as `accelerate launch SCRIPT ARGV...` would, then resets accelerate's process
state so that the next run builds its trainer, its DeepSpeed engine and its ZeRO-2 optimizer afresh; the
gloo process group is set up once and shared, which is what saves the start of a launch per run (two
Python processes importing torch, transformers, TRL and DeepSpeed). A line `=== run <i> done ===` after
each run lets a test split the output.
"""

import gc
import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_main(script: str):
    spec = importlib.util.spec_from_file_location(f"_train_many_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def reset_accelerate() -> None:
    import ctypes

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    gc.collect()
    # Give the freed models and optimizer states back to the system: glibc keeps them otherwise, and a rank
    # grew to 10 GB over nine runs (24 GB machine, a simulator server beside it).
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def main() -> None:
    sys.path.insert(0, str(REPO))
    runs = json.loads(Path(sys.argv[1]).read_text())
    for i, run in enumerate(runs):
        load_main(run["script"])(run["argv"])
        reset_accelerate()
        if os.environ.get("RANK", "0") == "0":  # the process that reports, as in each script
            print(f"=== run {i} done ===", flush=True)


if __name__ == "__main__":
    main()

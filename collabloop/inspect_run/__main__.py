"""`python -m collabloop.inspect_run PATH [--record N | --id ID] [--tasks TASKS.jsonl]`."""

from collabloop.inspect_run import main

if __name__ == "__main__":
    raise SystemExit(main())

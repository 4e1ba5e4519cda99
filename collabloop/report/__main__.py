"""`python -m collabloop.report --run_dir RUN_DIR`: the report, with the console's logging and exit codes."""

from collabloop.cli import run_main, setup_logging
from collabloop.report import main

if __name__ == "__main__":
    setup_logging()
    run_main(main, is_stage=False)

"""collabloop: iterative preference optimization with multiturn-aware rewards.

The shared package: record types, JSONL I/O, config parsing, model and
simulator clients, metrics. Stage scripts live in their own folders
(`generation/`, `simulate/`, `annotate_data/`, `dpo_iteration/`) and import
from here.
"""

__version__ = "0.1.0"

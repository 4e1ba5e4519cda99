"""Modules of a user's own that every stage imports before it reads records (`loop.plugins`).

A task kind or a metric registered in the driver's process would not be seen by
the stages, each of which runs in a process of its own. Every stage parses its
config with `collabloop.config.parse_config`, which calls `load_plugins` on the
run YAML it is given: so a module named there registers its task kinds
(`collabloop.task_kinds.register_task_kind`) and metrics
(`collabloop.metrics.register_metric`) in every process that reads tasks.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import yaml

from collabloop.config_error import ConfigError

logger = logging.getLogger(__name__)

SECTION, KEY = "loop", "plugins"


def plugin_names(config_path: str | Path) -> list[str]:
    """The modules the run YAML names in loop.plugins ([] when it names none, or the file is not there:
    the config parser says that itself)."""
    path = Path(config_path)
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    names = (data.get(SECTION) or {}).get(KEY) if isinstance(data, dict) else None
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{path}, section '{SECTION}': '{KEY}' must be a list of module names like "
                          f"[my_kinds], got {names!r}")
    return names


def load_plugins(config_path: str | Path) -> list[str]:
    """Import every module the run YAML names in loop.plugins; returns their names. Importing is cached by
    Python, so the several sections a process parses import each module once."""
    names = plugin_names(config_path)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # a plugin's own error, whatever it is, is reported with where it was named
            raise ConfigError(
                f"{config_path}, section '{SECTION}': plugin module {name!r} could not be imported "
                f"({type(e).__name__}: {e}); the module must be importable (on PYTHONPATH, or run from its "
                "folder) and register its task kinds and metrics without errors"
            ) from e
        logger.debug("plugin %s imported (%s)", name, config_path)
    return names

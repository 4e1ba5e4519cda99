"""The response cache: request-keyed answers of the simulator and the judges in one SQLite file, beside the
spend of the calls that made them. Shared by the stages of a run (and the ranks of a trainer): a rerun makes
no call whose answer is here, and a budget counts what every earlier call cost.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

SQLITE_TIMEOUT_S = 60  # how long a process waits for another's lock on the cache before it gives up


class ResponseCache:
    """Request-keyed responses in one SQLite file; safe to share between stages."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._naming_a_full_disk():
            self._db = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT_S, check_same_thread=False)
            self._enter_wal_mode()
            # `entry` is JSON: {"text": ..., "first_token_logprobs": ...}
            self._db.execute("CREATE TABLE IF NOT EXISTS responses_v1 (key TEXT PRIMARY KEY, entry TEXT NOT NULL)")
            self._create_spend_table()
            self._db.commit()

    def _enter_wal_mode(self) -> None:
        """Switch the file to write-ahead logging (readers never wait for a writer). The switch takes an
        exclusive lock and SQLite answers "database is locked" at once instead of waiting for it, so when
        several processes open a new cache together (the ranks of `accelerate launch`) the losers retry;
        the mode is stored in the file, so one success serves them all."""
        deadline = time.monotonic() + SQLITE_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _naming_a_full_disk(self):
        """A full disk as the OS says it, naming the file: SQLite says "database or disk is full", or, when
        its write-ahead log cannot grow, only "disk I/O error" (a full disk then shows as no space left)."""
        try:
            yield
        except sqlite3.OperationalError as e:
            no_space = shutil.disk_usage(self.path.parent).free < 2**20
            if "disk is full" in str(e) or ("disk I/O error" in str(e) and no_space):
                raise OSError(errno.ENOSPC, str(e), str(self.path)) from None
            raise

    def _create_spend_table(self) -> None:
        # One row: what the run's calls cost so far, and the dearest call (the budget's margin for the next).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spend_v1 (id INTEGER PRIMARY KEY CHECK (id = 0), "
            "spent_usd REAL NOT NULL, max_call_usd REAL NOT NULL)"
        )
        self._db.execute("INSERT OR IGNORE INTO spend_v1 (id, spent_usd, max_call_usd) VALUES (0, 0, 0)")

    def spend(self) -> tuple[float, float]:
        """(dollars spent by every call cached here, the largest cost of one call)."""
        with self._lock:
            row = self._db.execute("SELECT spent_usd, max_call_usd FROM spend_v1 WHERE id = 0").fetchone()
        return (row[0], row[1]) if row else (0.0, 0.0)

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT entry FROM responses_v1 WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, entry: str, cost_usd: float = 0.0) -> None:
        self.put_many([(key, entry)], [cost_usd])

    def put_many(self, rows: list[tuple[str, str]], costs_usd: list[float] = ()) -> None:
        """Store entries, and add what the calls cost (those that made no entry too) to the spend, in one
        transaction: a kill keeps all of them or none, so a cached answer is never paid for twice nor free."""
        with self._lock, self._naming_a_full_disk():
            self._db.executemany("INSERT OR REPLACE INTO responses_v1 (key, entry) VALUES (?, ?)", rows)
            if any(costs_usd):
                self._db.execute(
                    "UPDATE spend_v1 SET spent_usd = spent_usd + ?, max_call_usd = MAX(max_call_usd, ?) WHERE id = 0",
                    (sum(costs_usd), max(costs_usd)),
                )
            self._db.commit()

    def close(self) -> None:
        self._db.close()

"""Requests-per-minute and tokens-per-minute limits for the remote-call client.

API providers refuse calls past their limits (HTTP 429); the client would retry those with backoff, but a
stage of many concurrent calls then spends its retries on refusals and records failures. Waiting before a
call that would pass a limit keeps the calls within it instead.

The limiter keeps a sliding log of (start time, tokens) of the calls started in the last window: a call
starts when it keeps both counts of that window within their limits, which holds over every window, not
only over fixed minutes. A call that alone passes a limit (more tokens than the whole limit) goes when the
window is empty, so it is never refused forever.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

CHARACTERS_PER_TOKEN = 4  # the estimate RateLimitArgs documents; no tokenizer of the remote model is at hand


def _content_characters(content) -> int:
    """Characters of a message's content: a string, or OpenAI-style parts (the text ones count)."""
    if isinstance(content, str):
        return len(content)
    return sum(len(part.get("text") or "") for part in content or [] if isinstance(part, dict))


def estimated_tokens(messages: list[dict], max_tokens: int) -> int:
    """The tokens a call may use, as providers count them against a limit: the prompt's (estimated from its
    characters) plus the most it may generate."""
    return sum(_content_characters(m.get("content")) for m in messages) // CHARACTERS_PER_TOKEN + max_tokens


class RateLimiter:
    """At most `requests_per_minute` call starts and `tokens_per_minute` tokens in any `window_s` seconds
    (60: per minute, as providers count; the window is shorter in tests). 0 turns a limit off.

    Safe for many coroutines of one event loop: the check and the record are one step under a lock, and the
    calls go in the order they asked. The log outlives an event loop (the client runs `asyncio.run` for each
    batch, and the limits hold across batches); the lock is made anew for each loop, since an asyncio lock
    belongs to the loop it was first used in. Not for several threads at once.
    """

    def __init__(self, requests_per_minute: float, tokens_per_minute: float, window_s: float = 60.0):
        if requests_per_minute < 0 or tokens_per_minute < 0 or window_s <= 0:
            raise ValueError(f"rate limits must be >= 0 and the window > 0 s, got {requests_per_minute}, "
                             f"{tokens_per_minute}, {window_s}")
        self.requests_per_minute, self.tokens_per_minute = requests_per_minute, tokens_per_minute
        self.window_s = window_s
        self._log: deque[tuple[float, int]] = deque()  # (time.monotonic() at the start, tokens), oldest first
        self._tokens_in_log = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._holder_waiting = False  # the call holding the lock sleeps for the window: the ones queued wait too

    def _lock_of_running_loop(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._lock, self._holder_waiting = loop, asyncio.Lock(), False
        return self._lock

    def _delay_s(self, now: float, tokens: int) -> float:
        """Seconds until a call of `tokens` may start; 0: now."""
        while self._log and self._log[0][0] <= now - self.window_s:
            self._tokens_in_log -= self._log.popleft()[1]
        if not self._log:
            return 0.0
        # The newest entry that must leave the window first: the call goes when it has.
        must_leave = -1
        if self.requests_per_minute and len(self._log) + 1 > self.requests_per_minute:
            # int(): 2.5 per minute allows 2 in a window
            must_leave = min(len(self._log), len(self._log) + 1 - int(self.requests_per_minute)) - 1
        if self.tokens_per_minute and self._tokens_in_log + tokens > self.tokens_per_minute:
            remaining = self._tokens_in_log
            for i, (_, logged) in enumerate(self._log):
                remaining -= logged
                if i == len(self._log) - 1 or remaining + tokens <= self.tokens_per_minute:
                    must_leave = max(must_leave, i)
                    break
        if must_leave < 0:
            return 0.0
        return max(0.0, self._log[must_leave][0] + self.window_s - now)

    async def acquire(self, tokens: int) -> bool:
        """Wait until a call of `tokens` tokens keeps both limits, and count it as started. True when it had
        to wait (for the window, or queued behind a call that did)."""
        if not self.requests_per_minute and not self.tokens_per_minute:
            return False
        lock = self._lock_of_running_loop()
        waited = self._holder_waiting
        async with lock:
            while (delay_s := self._delay_s(time.monotonic(), tokens)) > 0:
                waited = self._holder_waiting = True
                try:
                    await asyncio.sleep(delay_s)
                finally:
                    self._holder_waiting = False
            self._log.append((time.monotonic(), tokens))
            self._tokens_in_log += tokens
        return waited

"""Fail points: the process kills itself (SIGKILL) at a named point, so that tests can put a crash exactly
where a random kill would land only by luck (as etcd's gofail and FoundationDB's simulation do).

    COLLABLOOP_FAILPOINT=append:2 python generation/generate.py ...   # killed after its 2nd appended batch

`NAME` or `NAME:N` (the N-th time the point is passed; default 1). The points a stage passes, in order:
- `append`: a batch of finished records is durable in the partial file;
- `output_written`: the whole output is in its temporary file, not yet renamed into place;
- `output_renamed`: the output is in place, without a meta yet (the partial's says "running");
- `meta_written`: the meta says "complete", the partial file is still there.
Unset (always, outside tests), a fail point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "COLLABLOOP_FAILPOINT"
POINTS = ("append", "output_written", "output_renamed", "meta_written")
_passed: Counter = Counter()


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown fail point {target!r}; the points are {', '.join(POINTS)}")
    if target != name:
        return
    _passed[name] += 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

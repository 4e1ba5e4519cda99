"""Record types for every JSONL file of a run (README.md, "What a run writes").

Every record is validated when it is read. A problem raises `RecordError`
naming the file, the line and the field, so a user can open the file at that
line and see what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from collabloop.task_kinds import TASK_KINDS

ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """A record that does not match its schema."""

    def __init__(self, where: str, field_name: str, problem: str):
        self.where = where
        self.field_name = field_name
        self.problem = problem
        super().__init__(f"{where}: field '{field_name}': {problem}")


def _req(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise RecordError(where, key, "missing (required)")
    return obj[key]


def _str(value: Any, key: str, where: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RecordError(where, key, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RecordError(where, key, "must not be empty")
    return value


def _int(value: Any, key: str, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(where, key, f"expected an integer, got {value!r}")
    if value < minimum:
        raise RecordError(where, key, f"must be >= {minimum}, got {value}")
    return value


def _opt_float(value: Any, key: str, where: str) -> float | None:
    """A finite number, or null (a value that could not be computed)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(where, key, f"expected a number or null, got {value!r}")
    if not math.isfinite(value):
        raise RecordError(where, key, f"must be finite, got {value!r}")
    return float(value)


def _float(value: Any, key: str, where: str) -> float:
    out = _opt_float(value, key, where)
    if out is None:
        raise RecordError(where, key, "must be a number, got null")
    return out


def _dict(value: Any, key: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise RecordError(where, key, f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, key: str, where: str) -> list:
    if not isinstance(value, list):
        raise RecordError(where, key, f"expected a list, got {type(value).__name__}")
    return value


def validate_messages(value: Any, key: str, where: str, *, allow_empty: bool = False) -> list[dict]:
    """A list of {"role", "content"} messages with known roles."""
    messages = _list(value, key, where)
    if not messages and not allow_empty:
        raise RecordError(where, key, "must hold at least one message")
    out = []
    for i, message in enumerate(messages):
        mkey = f"{key}[{i}]"
        message = _dict(message, mkey, where)
        extra = set(message) - {"role", "content"}
        if extra:
            raise RecordError(where, mkey, f"unknown keys {sorted(extra)}; a message has only 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise RecordError(where, f"{mkey}.role", f"expected one of {list(ROLES)}, got {role!r}")
        if "content" not in message:
            raise RecordError(where, f"{mkey}.content", "missing (required)")
        _str(message["content"], f"{mkey}.content", where, allow_empty=True)
        out.append({"role": role, "content": message["content"]})
    return out


class Record:
    """Base class: strict parsing from a dict, plain dict out."""

    KIND: ClassVar[str] = "record"

    @classmethod
    def from_dict(cls, obj: Any, where: str):
        if not isinstance(obj, dict):
            raise RecordError(where, "<record>", f"expected a JSON object, got {type(obj).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(obj) - known
        if extra:
            raise RecordError(
                where, sorted(extra)[0], f"unknown field for a {cls.KIND} record (known: {sorted(known)})"
            )
        return cls(**cls._parse(obj, where))

    @classmethod
    def _parse(cls, obj: dict, where: str) -> dict:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _env_limit(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r}: expected a positive whole number")
    return value


# How large one task may be, checked when a task file is read (before any call): a goal of megabytes would
# otherwise go whole into every simulator prompt. Far above any task of CollabLLM's data sets (their
# longest documents are a few thousand words) and HumanEval's (4 KB a line); raise them in the environment.
MAX_TASK_LINE_BYTES = _env_limit("COLLABLOOP_MAX_TASK_LINE_BYTES", 2**20)
MAX_TASK_TEXT_CHARS = _env_limit("COLLABLOOP_MAX_TASK_TEXT_CHARS", 200_000)


def _bounded(text: str, key: str, where: str) -> str:
    if len(text) > MAX_TASK_TEXT_CHARS:
        raise RecordError(where, key, f"{len(text)} characters, more than the {MAX_TASK_TEXT_CHARS} a task's text "
                                      f"may hold (COLLABLOOP_MAX_TASK_TEXT_CHARS raises the limit)")
    return text


@dataclass
class Task(Record):
    """One task: what the user wants (hidden from the policy) and how to check it."""

    KIND: ClassVar[str] = "task"
    id: str
    task: str
    goal: str
    reference: str
    prompt: list[dict] | None = None
    metadata: dict = field(default_factory=dict)

    @classmethod
    def _parse(cls, obj, where):
        kind = _str(_req(obj, "task", where), "task", where)
        if kind not in TASK_KINDS:
            raise RecordError(where, "task", f"unknown task kind {kind!r}; the known kinds are {sorted(TASK_KINDS)} "
                                             "(a kind of your own: collabloop.task_kinds.register_task_kind, in a "
                                             "module the run YAML names in loop.plugins)")
        task_id = _str(_req(obj, "id", where), "id", where)
        if task_id != task_id.strip() or any(ord(c) < 32 or ord(c) == 127 for c in task_id):
            raise RecordError(where, "id", f"{task_id!r}: an id has no surrounding spaces and no control characters "
                                           f"(it names the task in every record, log line and report)")
        metadata = _dict(obj.get("metadata", {}), "metadata", where)
        entry = metadata.get("entry_point")
        if entry is not None and not (isinstance(entry, str) and entry.isidentifier()):
            # It is written into the program the sandbox runs, as `check(<entry_point>)`: checked whatever the
            # task's kind, since a metric that runs code (pass_rate) may score a task of any kind that has one.
            raise RecordError(where, "metadata.entry_point", f"expected a Python function name, got {entry!r}")
        if not isinstance(metadata.get("underspecified", False), bool):
            # The reports split held-out tasks by it.
            raise RecordError(where, "metadata.underspecified",
                              f"expected true or false, got {metadata['underspecified']!r}")
        out = {
            "id": task_id,
            "task": kind,
            "goal": _bounded(_str(_req(obj, "goal", where), "goal", where), "goal", where),
            "reference": _bounded(_str(_req(obj, "reference", where), "reference", where), "reference", where),
            "prompt": None,
            "metadata": metadata,
        }
        if obj.get("prompt") is not None:
            out["prompt"] = validate_messages(obj["prompt"], "prompt", where)
            for i, message in enumerate(out["prompt"]):
                _bounded(message["content"], f"prompt[{i}].content", where)
            if out["prompt"][-1]["role"] != "user":
                raise RecordError(where, "prompt", "the opening messages must end with a user turn")
        check = TASK_KINDS[kind].check
        problem = check(out) if check is not None else None
        if problem is not None:
            raise RecordError(where, problem[0], f"{problem[1]} (a task of kind {kind!r})")
        return out


@dataclass
class Context(Record):
    """A conversation so far, ending with a user turn, to be answered by the policy."""

    KIND: ClassVar[str] = "context"
    id: str
    task_id: str
    prompt: list[dict]
    turn: int

    @classmethod
    def _parse(cls, obj, where):
        prompt = validate_messages(_req(obj, "prompt", where), "prompt", where)
        if prompt[-1]["role"] != "user":
            raise RecordError(where, "prompt", f"must end with a user turn, ends with {prompt[-1]['role']!r}")
        return {
            "id": _str(_req(obj, "id", where), "id", where),
            "task_id": _str(_req(obj, "task_id", where), "task_id", where),
            "prompt": prompt,
            "turn": _int(_req(obj, "turn", where), "turn", where, minimum=0),
        }


@dataclass
class Generation(Context):
    """A context with K candidate replies sampled from the policy."""

    KIND: ClassVar[str] = "generation"
    responses: list[str]
    gen: dict

    @classmethod
    def _parse(cls, obj, where):
        out = Context._parse({k: obj[k] for k in ("id", "task_id", "prompt", "turn") if k in obj}, where)
        responses = _list(_req(obj, "responses", where), "responses", where)
        if not responses:
            raise RecordError(where, "responses", "must hold at least one candidate")
        out["responses"] = [_str(r, f"responses[{i}]", where, allow_empty=True) for i, r in enumerate(responses)]
        out["gen"] = _dict(_req(obj, "gen", where), "gen", where)
        return out


def _parse_future(value: Any, key: str, where: str) -> dict:
    future = _dict(value, key, where)
    extra = set(future) - {"messages", "terminated", "error"}
    if extra:
        raise RecordError(where, key, f"unknown keys {sorted(extra)}; a future has messages, terminated, error")
    messages = validate_messages(_req(future, "messages", where), f"{key}.messages", where, allow_empty=True)
    terminated = _req(future, "terminated", where)
    if not isinstance(terminated, bool):
        raise RecordError(where, f"{key}.terminated", f"expected true or false, got {terminated!r}")
    error = future.get("error")
    if error is not None:
        _str(error, f"{key}.error", where)
    return {"messages": messages, "terminated": terminated, "error": error}


@dataclass
class Simulation(Generation):
    """A generation with S simulated futures after each of its K candidates."""

    KIND: ClassVar[str] = "simulation"
    futures: list[list[dict]]

    @classmethod
    def _parse(cls, obj, where):
        out = Generation._parse({k: v for k, v in obj.items() if k != "futures"}, where)
        futures = _list(_req(obj, "futures", where), "futures", where)
        if len(futures) != len(out["responses"]):
            raise RecordError(
                where,
                "futures",
                f"holds {len(futures)} lists for {len(out['responses'])} responses; need one per response",
            )
        out["futures"] = [
            [_parse_future(f, f"futures[{k}][{s}]", where) for s, f in enumerate(_list(per, f"futures[{k}]", where))]
            for k, per in enumerate(futures)
        ]
        return out


def _parse_metric_entry(value: Any, key: str, where: str) -> dict:
    entry = _dict(value, key, where)
    values = [
        _opt_float(v, f"{key}.values[{i}]", where)
        for i, v in enumerate(_list(_req(entry, "values", where), f"{key}.values", where))
    ]
    errors = entry.get("errors", [None] * len(values))
    errors = _list(errors, f"{key}.errors", where)
    if len(errors) != len(values):
        raise RecordError(where, f"{key}.errors", f"holds {len(errors)} entries for {len(values)} values")
    for i, e in enumerate(errors):
        if e is not None:
            _str(e, f"{key}.errors[{i}]", where)
    return {"mean": _opt_float(_req(entry, "mean", where), f"{key}.mean", where), "values": values, "errors": errors}


@dataclass
class Rewarded(Simulation):
    """A simulation scored per metric, with one multiturn-aware reward per candidate."""

    KIND: ClassVar[str] = "reward"
    metrics: list[dict]
    rewards: list[float | None]
    future_rewards: list[list[float | None]]  # [k][s]: the reward of candidate k's future s; its mean is rewards[k]

    @classmethod
    def _parse(cls, obj, where):
        out = Simulation._parse({k: v for k, v in obj.items() if k not in ("metrics", "rewards", "future_rewards")},
                                where)
        num = len(out["responses"])
        future_rewards = _list(_req(obj, "future_rewards", where), "future_rewards", where)
        if len(future_rewards) != num:
            raise RecordError(where, "future_rewards", f"holds {len(future_rewards)} lists for {num} responses; "
                                                       "need one per response")
        out["future_rewards"] = []
        for k, per in enumerate(future_rewards):
            per = _list(per, f"future_rewards[{k}]", where)
            if len(per) != len(out["futures"][k]):
                raise RecordError(where, f"future_rewards[{k}]", f"holds {len(per)} rewards for "
                                  f"{len(out['futures'][k])} futures; need one per future")
            out["future_rewards"].append([_opt_float(r, f"future_rewards[{k}][{s}]", where) for s, r in enumerate(per)])
        metrics = _list(_req(obj, "metrics", where), "metrics", where)
        rewards = _list(_req(obj, "rewards", where), "rewards", where)
        for name, value in (("metrics", metrics), ("rewards", rewards)):
            if len(value) != num:
                raise RecordError(where, name, f"holds {len(value)} entries for {num} responses; need one per response")
        out["metrics"] = [
            {
                m: _parse_metric_entry(e, f"metrics[{k}].{m}", where)
                for m, e in _dict(per, f"metrics[{k}]", where).items()
            }
            for k, per in enumerate(metrics)
        ]
        out["rewards"] = [_opt_float(r, f"rewards[{k}]", where) for k, r in enumerate(rewards)]
        return out


@dataclass
class Pair(Record):
    """A preference pair in TRL's conversational format."""

    KIND: ClassVar[str] = "pair"
    id: str
    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]
    chosen_reward: float
    rejected_reward: float
    margin: float

    @classmethod
    def _parse(cls, obj, where):
        out = {
            "id": _str(_req(obj, "id", where), "id", where),
            "prompt": validate_messages(_req(obj, "prompt", where), "prompt", where),
        }
        for key in ("chosen", "rejected"):
            messages = validate_messages(_req(obj, key, where), key, where)
            if len(messages) != 1 or messages[0]["role"] != "assistant":
                raise RecordError(where, key, "must be a list of exactly one assistant message")
            out[key] = messages
        for key in ("chosen_reward", "rejected_reward", "margin"):
            out[key] = _float(_req(obj, key, where), key, where)
        return out


RECORD_TYPES: dict[str, type[Record]] = {
    "tasks": Task,
    "contexts": Context,
    "generations": Generation,
    "simulations": Simulation,
    "rewards": Rewarded,
    "pairs": Pair,
}


@dataclass
class SFTExample(Record):
    """A conversation to imitate (TRL's conversational language-modeling format)."""

    KIND: ClassVar[str] = "sft"
    id: str
    messages: list[dict]

    @classmethod
    def _parse(cls, obj, where):
        messages = validate_messages(_req(obj, "messages", where), "messages", where)
        if messages[-1]["role"] != "assistant":
            raise RecordError(where, "messages", "an SFT conversation must end with an assistant turn")
        return {"id": _str(_req(obj, "id", where), "id", where), "messages": messages}


RECORD_TYPES["sft"] = SFTExample


@dataclass
class EvalConversation(Record):
    """One full evaluation conversation (opening to termination or the turn limit), scored."""

    KIND: ClassVar[str] = "evaluation"
    id: str
    task_id: str
    messages: list[dict]
    terminated: bool
    error: str | None
    metrics: dict[str, float | None]
    metric_errors: dict[str, str]

    @classmethod
    def _parse(cls, obj, where):
        terminated = _req(obj, "terminated", where)
        if not isinstance(terminated, bool):
            raise RecordError(where, "terminated", f"expected true or false, got {terminated!r}")
        error = _req(obj, "error", where)
        if error is not None:
            _str(error, "error", where)
        metrics = _dict(_req(obj, "metrics", where), "metrics", where)
        metric_errors = _dict(_req(obj, "metric_errors", where), "metric_errors", where)
        for name, message in metric_errors.items():
            _str(message, f"metric_errors.{name}", where)
        return {
            "id": _str(_req(obj, "id", where), "id", where),
            "task_id": _str(_req(obj, "task_id", where), "task_id", where),
            "messages": validate_messages(_req(obj, "messages", where), "messages", where),
            "terminated": terminated,
            "error": error,
            "metrics": {m: _opt_float(v, f"metrics.{m}", where) for m, v in metrics.items()},
            "metric_errors": dict(metric_errors),
        }


RECORD_TYPES["evaluation"] = EvalConversation

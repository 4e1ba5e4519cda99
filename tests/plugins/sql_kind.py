"""A task kind of one's own in one module: SQL questions, answered with one query.

A run names this module in `loop.plugins` (with this folder on PYTHONPATH), and every stage imports it
before it reads a task: tasks of kind `sql` then validate, their answer is the query of the assistant's
last ```sql block, and `sql_match` (the kind's task metric) scores it against the reference query.
"""

from __future__ import annotations

import re

from collabloop.metrics import MetricValue, register_metric, states_answer
from collabloop.task_kinds import TaskKind, register_task_kind

_SQL_BLOCK = re.compile(r"```sql[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def normalize(query: str) -> str:
    """A query as compared: lower case, one space between words, no closing semicolon."""
    return " ".join(query.strip().rstrip(";").split()).lower()


def read_query(text: str) -> str | None:
    """The query of the last ```sql block; a message that is a bare SELECT is one too (as references are)."""
    blocks = _SQL_BLOCK.findall(text)
    if blocks:
        return normalize(blocks[-1])
    return normalize(text) if text.strip().lower().startswith("select ") else None


def check_sql_task(task: dict) -> tuple[str, str] | None:
    dialect = task["metadata"].get("dialect")
    if not isinstance(dialect, str) or not dialect:
        return "metadata.dialect", f"expected the SQL dialect the query is written in (e.g. 'sqlite'), got {dialect!r}"
    return None


SQL = register_task_kind(TaskKind(
    name="sql",
    description="a question about a database, answered with one SQL query (metric sql_match)",
    task_metric="sql_match",
    read_answer=read_query,
    check=check_sql_task,
    assumed_eval_tasks=321,
    assumed_goal_tokens=80,
))


@register_metric("sql_match", higher_is_better=True)
def sql_match(items, res):
    """1 if the last query the assistant stated is the reference query (normalized), else 0."""
    def matches(item) -> bool:
        conversation = [*item.history, *item.window]
        stated = [read_query(conversation[i]["content"]) for i in range(len(item.history), len(conversation))
                  if states_answer(item.task, conversation[i], conversation[:i])]
        return bool(stated) and stated[-1] == read_query(item.task.reference)

    return [MetricValue(None, f"sql_match scores sql tasks, not {item.task.task!r}") if item.task.task != "sql"
            else MetricValue(float(matches(item))) for item in items]

"""Collaboration, measured: asking, withheld facts, what a simulated user did; the choice simulator; the
collaboration task sets; the collaborative candidates' settings; evaluating a model with no training."""

from __future__ import annotations

import json

import pytest

from collabloop.collaboration import asks_user, numbers, user_turn_counts, withheld_facts
from collabloop.config import ConfigError
from collabloop.jsonl import read_records
from collabloop.llm_client import LLMClient, Request
from collabloop.loop_config import LoopConfig
from collabloop.metrics import MetricResources, ScoringItem, get_metric, states_answer
from collabloop.records import Task
from collabloop.simulator import TERMINATION_SIGNAL, goal_choices, next_turn_request, parse_user_turn
from collabloop.stage_configs import GenerateConfig
from tests.conftest import REPO

GOAL = ("You want to know the answer to this question: Tom has 5 marbles and gets 4 more. How many marbles does "
        "Tom have now? You want the final number, and you are happy once the assistant gives the right one.")
OPENING = [{"role": "user", "content": "Tom has some marbles and gets 4 more. How many marbles does Tom have now?"}]
TASK = Task(id="t", task="math", goal=GOAL, reference="9", prompt=OPENING, metadata={"underspecified": True})


@pytest.mark.parametrize("reply, asks", [
    ("How many marbles did Tom have before he got 4?", True),  # repeats a number of the request: still asks
    ("Could you tell me how many marbles Tom started with?", True),
    ("Tom has 4 + 5 = 9 marbles.", False),
    ("Did you mean 5? Then Tom has 9 marbles.", False),  # states new numbers: an answer, with a question
    ("Tom has some marbles. He gets more.", False),  # no question
    ("Is this right?\n```python\nprint(9)\n```", False),  # code is an answer
])
def test_asks_user(reply, asks):
    assert asks_user(reply, OPENING) is asks


def test_an_ask_is_not_an_answer_and_accuracy_reads_the_answer_after_it():
    ask = {"role": "assistant", "content": "How many marbles did Tom have before he got 4?"}
    answer = {"role": "assistant", "content": "Then Tom has 5 + 4 = 9 marbles."}
    assert not states_answer(TASK, ask, OPENING)
    assert states_answer(TASK, answer, [*OPENING, ask, {"role": "user", "content": "He had 5."}])
    accuracy, ask_rate = get_metric("accuracy"), get_metric("ask_rate")
    items = [
        ScoringItem(TASK, OPENING, [ask, {"role": "user", "content": "Tom has 5 marbles and gets 4 more."}, answer]),
        ScoringItem(TASK, OPENING, [ask]),  # asked, never answered: the 4 it repeats is not its answer
        ScoringItem(TASK, OPENING, [{"role": "assistant", "content": "Tom has 8 marbles."}]),
    ]
    assert [v.value for v in accuracy(items, MetricResources())] == [1.0, 0.0, 0.0]
    assert [v.value for v in ask_rate(items, MetricResources())] == [1.0, 1.0, 0.0]


def test_withheld_facts_and_what_each_user_turn_did():
    assert numbers("2.0 apples, 3.5 pens and 10 cups; x2") == {"2", "3.5", "10"}
    assert withheld_facts(GOAL, OPENING) == {"5"}
    assert withheld_facts(GOAL, [{"role": "user", "content": "Tom has 5 marbles and gets 4 more."}]) == set()
    conversation = [
        *OPENING,
        {"role": "assistant", "content": "How many did he have?"},
        {"role": "user", "content": "Tom has 5 marbles and gets 4 more."},  # revealed
        {"role": "assistant", "content": "Is it 12?"},
        {"role": "user", "content": "No, he had 7."},  # drifted: 7 is neither in the goal nor said before
        {"role": "assistant", "content": "9"},
        {"role": "user", "content": TERMINATION_SIGNAL},
    ]
    counts = user_turn_counts(GOAL, conversation, 2, TERMINATION_SIGNAL)
    assert counts == {"user_turns": 3, "user_revealed": 1, "user_drifted": 1, "user_terminated": 1}
    # Turns before `first_new` (the context) are not counted again.
    assert user_turn_counts(GOAL, conversation, 5, TERMINATION_SIGNAL)["user_turns"] == 1


def test_the_choice_simulator_picks_among_its_goals_sentences():
    choices = goal_choices(GOAL)
    # The sentences that speak to the role-player ("You want ...") describe the user; they are not said.
    # A fact alone, or the request restated whole.
    assert choices == ["Tom has 5 marbles and gets 4 more.", "How many marbles does Tom have now?",
                       "Tom has 5 marbles and gets 4 more. How many marbles does Tom have now?", TERMINATION_SIGNAL]
    assert goal_choices("You want a poem. You like cats.") == [  # nothing else to say
        "You want a poem.", "You like cats.", "You want a poem. You like cats.", TERMINATION_SIGNAL]
    long_goal = " ".join(f"Fact {i} is here." for i in range(10))
    assert len(goal_choices(long_goal)) == 11  # single sentences only: runs would grow with the square
    request = next_turn_request(TASK, [*OPENING, {"role": "assistant", "content": "How many?"}], "s", "choice")
    assert request.choices == choices and next_turn_request(TASK, OPENING, "s", "text").choices is None
    assert parse_user_turn(" Tom has 5 marbles and gets 4 more.", "choice").message == choices[0]
    assert parse_user_turn(TERMINATION_SIGNAL, "choice").terminated
    # The choices are part of the cache key (a cached free-text turn is not a chosen one), and only when set:
    # every earlier cache keeps its keys.
    client = LLMClient.__new__(LLMClient)
    client.endpoint = type("E", (), {"model": "m", "api_base": None, "temperature": 1.0, "max_tokens": 8})()
    plain, chosen = Request(OPENING, salt="s"), Request(OPENING, salt="s", choices=choices)
    assert client.cache_key(plain) != client.cache_key(chosen)
    assert client.cache_key(plain) == client.cache_key(Request(OPENING, salt="s", choices=None))


def test_collaboration_task_sets_leave_out_a_fact_only_the_goal_holds():
    train = read_records(REPO / "data" / "tasks" / "collab_train.jsonl", Task)
    held_out = read_records(REPO / "data" / "tasks" / "collab_heldout.jsonl", Task)
    for tasks in (train, held_out):
        under = [t for t in tasks if t.metadata["underspecified"]]
        assert len(under) * 2 == len(tasks)
        for task in tasks:
            withheld = withheld_facts(task.goal, task.prompt)
            assert (len(withheld) == 1) is task.metadata["underspecified"], task.id
            assert str(task.metadata["a"] + task.metadata["b"]) == task.reference
    assert not {t.id for t in train} & {t.id for t in held_out}
    assert not {t.goal for t in train} & {t.goal for t in held_out}

    def wording(task: Task) -> str:  # the template: the opening without its names and numbers
        text = task.prompt[0]["content"]
        for word in (str(task.metadata["a"]), str(task.metadata["b"]), "some", "a few"):
            text = text.replace(word, "#")
        return " ".join(w for w in text.split() if not w[0].isupper() or w in ("How", "What", "There", "In", "A"))

    assert not {wording(t) for t in train} & {wording(t) for t in held_out}


def test_collaborative_candidates_settings_are_checked():
    cfg = GenerateConfig(num_candidates=6, collaborative_candidates=3, collaborative_reply_opening="Could you")
    assert cfg.collaborative_system_prompt  # CollabLLM-style prompt by default
    with pytest.raises(ConfigError, match="collaborative_candidates must be in 0..num_candidates"):
        GenerateConfig(num_candidates=4, collaborative_candidates=5)
    with pytest.raises(ConfigError, match="both empty"):
        GenerateConfig(collaborative_candidates=1, collaborative_system_prompt="")


def test_zero_iterations_evaluate_a_model_and_need_eval_tasks():
    loop = LoopConfig(num_iterations=0, eval_tasks="data/tasks/collab_heldout.jsonl")
    from collabloop import pipeline

    assert pipeline.iteration_stages(loop, 0) == ["contexts", "evaluate"]
    with pytest.raises(ConfigError, match="eval_tasks is empty"):
        LoopConfig(num_iterations=0)
    with pytest.raises(ConfigError, match="num_iterations must be >= 0"):
        LoopConfig(num_iterations=-1)


def test_the_demo_config_is_the_collaboration_demo():
    import yaml

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    assert demo["loop"]["train_tasks"].endswith("collab_train.jsonl")
    assert demo["simulate"]["window_turns"] >= 1 and demo["generate"]["collaborative_candidates"] > 0
    assert "ask_rate" in demo["evaluate"]["metrics"]
    assert json.loads(json.dumps(demo))  # plain data


def test_underspecified_is_a_boolean(tmp_path):
    from collabloop.records import RecordError

    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "x", "task": "math", "goal": "g", "reference": "1",
                                "metadata": {"underspecified": "yes"}}) + "\n")
    with pytest.raises(RecordError, match=r"tasks.jsonl:1: field 'metadata.underspecified': expected true or false"):
        read_records(path, Task)

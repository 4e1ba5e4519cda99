"""CollabLLM's judge forms: interactivity as a reasoned 0-1 score over the whole conversation, and BLEU on the
document a judge copies out. What they cannot read is an error, kept out of the means, never a 0."""

from __future__ import annotations

import pytest

from collabloop.estimate import _judge_prompts
from collabloop.judges import parse_document, parse_score
from collabloop.metrics import ScoringItem, metric_resources, score_items
from collabloop.records import Task
from collabloop.response_cache import ResponseCache
from collabloop.stage_configs import AnnotateConfig


@pytest.mark.parametrize("text, score", [
    ("It asked for the missing number.\nScore: 1", 1.0), ("Reasons.\nScore: 0.5", 0.5), ("score = .25", 0.25),
    ("First Score: 0, then on reflection\nScore: 1.0", 1.0), ("**Score:** 0.8", 0.8),
    ("Score: 7", None), ("I would give it a B.", None), ("", None),
])
def test_the_reasoned_score_is_the_last_score_line_within_0_and_1(text, score):
    assert parse_score(text) == score


def test_the_extracted_document_is_between_the_last_tags():
    assert parse_document("Here:\n<document>\nTitle\n\nBody.\n</document>") == "Title\n\nBody."
    assert parse_document("<document></document>") == ""  # no document written: BLEU 0
    assert parse_document("The document is: Title. Body.") is None  # not extracted: an error


def test_the_estimate_prices_a_reasoning_judge_at_its_own_token_limit():
    cfg = AnnotateConfig(judge_max_tokens=1, judge_reasoning_max_tokens=300)
    (_, quick), (_, reasoned) = _judge_prompts(["interactivity", "accuracy", "interactivity_reasoned"], 100, cfg)
    assert (quick, reasoned) == (1, 300)


DOC = Task(id="d1", task="doc", goal="You want a two-line poem about rain.", prompt=None,
           reference="Rain on the roof\nsings me to sleep", metadata={})


@pytest.mark.slow
def test_the_reasoning_judges_on_the_embedded_model(simulator, tmp_path):
    """Each value is a score in range or an error with its reason; none is a silent 0 for a judge that
    could not be read."""
    cfg = AnnotateConfig(judge_model="hosted_vllm/simulator", judge_api_base=simulator.api_base,
                         judge_reasoning_max_tokens=96, metric_weights={"interactivity_reasoned": 1.0})
    history = [{"role": "user", "content": "Write me a short poem about rain."}]
    items = [ScoringItem(task=DOC, history=history, window=window) for window in (
        [{"role": "assistant", "content": "Should it rhyme?"}, {"role": "user", "content": "No."},
         {"role": "assistant", "content": "Rain on the roof\nsings me to sleep"}],
        [{"role": "assistant", "content": "Rain is water that falls from clouds."}],
    )]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    names = ["interactivity_reasoned", "bleu_extracted"]
    res = metric_resources(cfg, cache, names)
    values = score_items(items, [None, None], names, res)
    for name in names:
        for value in values[name]:
            assert (value.value is None and value.error) or 0.0 <= value.value <= 1.0, (name, value)
    assert res.judge.stats["calls"] == 4  # one per conversation and metric
    cache.close()

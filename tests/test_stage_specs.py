"""A stage is declared once (its `StageSpec`): a new one is added in one module, the loop sets only the
inputs a stage declares and refuses a YAML that sets one of them, and who plays each role is named once."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from collabloop import pipeline
from collabloop.cli import record_stage_main
from collabloop.config import ConfigError, parse_config
from collabloop.jsonl import read_records, write_records
from collabloop.loop import check_run_config
from collabloop.loop_config import LoopConfig
from collabloop.records import Context
from collabloop.stage import StageRun, read_meta
from collabloop.stage_configs import _help
from collabloop.stage_spec import StageSpec, output_of, own_output
from tests.conftest import REPO

# --- a stage of one's own, in this one module: keep the contexts whose opening is short ---

@dataclass
class ShortContextsConfig:
    """Keep the contexts whose last user turn has at most max_words words."""

    contexts_path: str = _help("Contexts to filter (JSONL).", default="contexts.jsonl")
    output_path: str = _help("Where to write the short contexts (JSONL).", default="short_contexts.jsonl")
    max_words: int = _help("Most words in the last user turn of a kept context.", default=8)


def keep_short(cfg: ShortContextsConfig) -> dict | None:
    stage = StageRun("short_contexts", cfg.output_path, Context, (cfg,), inputs={"contexts": cfg.contexts_path})
    if stage.up_to_date():
        return None
    stage.begin()
    contexts = read_records(cfg.contexts_path, Context)
    kept = [c for c in contexts if len(c.prompt[-1]["content"].split()) <= cfg.max_words]
    stage.counts["contexts_dropped_long"] = len(contexts) - len(kept)
    stage.append(kept)
    return stage.finish([c.id for c in kept])


SHORT_CONTEXTS = StageSpec(
    "short_contexts", __file__, ShortContextsConfig, "short_contexts.jsonl", "contexts", keep_short,
    inputs={"contexts_path": output_of("contexts"), "output_path": own_output},
)


@pytest.fixture
def registered():
    """The stage in the table for one test; the table as it was afterwards."""
    stages, sections = dict(pipeline.STAGES), dict(pipeline.SECTIONS)
    pipeline.register_stage(SHORT_CONTEXTS, after="contexts")
    yield SHORT_CONTEXTS
    pipeline.STAGES.clear()
    pipeline.STAGES.update(stages)
    pipeline.SECTIONS.clear()
    pipeline.SECTIONS.update(sections)


def test_a_stage_added_in_one_module_is_run_checked_and_inspected_like_ours(registered, tmp_path):
    from collabloop.inspect_run.kinds import kind_by_stage

    loop = LoopConfig(eval_tasks="data/tasks/math_demo_eval.jsonl")
    assert pipeline.iteration_stages(loop, 1)[:3] == ["contexts", "short_contexts", "generate"]
    assert kind_by_stage()["short_contexts"] == "contexts" and "short_contexts" in pipeline.SECTIONS
    config = tmp_path / "run.yaml"
    config.write_text("short_contexts:\n  max_words: 5\n")
    check_run_config(str(config))  # its section is checked like ours: a typo in it is an error
    config.write_text("short_contexts:\n  max_wrods: 5\n")
    with pytest.raises(ConfigError, match="unknown key 'max_wrods'.*'max_words'"):
        check_run_config(str(config))
    config.write_text("short_contexts:\n  max_words: 5\n")

    run_dir = tmp_path / "run"
    contexts = pipeline.output_path("contexts", run_dir, 1)
    contexts.parent.mkdir(parents=True)
    openings = ["What is 2 + 3?", "Add the two numbers I am thinking of, please."]
    write_records(contexts, [Context(id=f"t{n}/turn0", task_id=f"t{n}", turn=0,
                                     prompt=[{"role": "user", "content": text}]) for n, text in enumerate(openings)])
    argv = pipeline.stage_args("short_contexts", loop, str(config), run_dir, 1)
    assert argv[1:] == ["--config", str(config), "--contexts_path", str(contexts),
                        "--output_path", str(run_dir / "iter_1" / "short_contexts.jsonl")]
    record_stage_main(SHORT_CONTEXTS, "", argv[1:])
    output = run_dir / "iter_1" / "short_contexts.jsonl"
    assert [c.id for c in read_records(output, Context)] == ["t0/turn0"]
    meta = read_meta(output.with_name("short_contexts.meta.json"))
    assert meta["status"] == "complete" and meta["counts"]["contexts_dropped_long"] == 1
    with pytest.raises(ConfigError, match="exists already"):
        pipeline.register_stage(SHORT_CONTEXTS, after="contexts")


# --- no YAML key is overridden behind the user's back ---

@pytest.mark.parametrize("section, key", [
    ("generate", "model"), ("simulate", "generations_path"), ("annotate", "tokenizer"),
    ("contexts", "continue_from"), ("evaluate", "output_dir"), ("kto", "ref_model"), ("grpo", "tasks_path"),
])
def test_a_yaml_that_sets_what_the_loop_sets_is_refused_by_the_loop(tmp_path, section, key):
    config = tmp_path / "run.yaml"
    config.write_text(f"loop:\n  num_iterations: 1\n{section}:\n  {key}: somewhere\n")
    run = subprocess.run([sys.executable, "-m", "collabloop.loop", "env", "--config", str(config), "--run_dir",
                          str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout
    assert f"{config}, section '{section}': '{key}' is set by the loop in every iteration" in run.stderr
    assert "remove it from the YAML" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_every_input_the_loop_passes_is_one_it_declares_and_none_is_a_setting_people_write():
    """The configs we ship set no declared input; every declared input is a field of the stage's config."""
    from collabloop.loop import trainer_keys

    keys = trainer_keys()
    for stage in pipeline.STAGES.values():
        fields = set(keys["dpo" if stage.section_is_algorithm else stage.name][0]) | {"algorithm"} if stage.trainer \
            else set(parse_config(stage.config, stage.name, []).__dataclass_fields__)
        assert set(stage.inputs) <= fields, (stage.name, set(stage.inputs) - fields)
    for config in sorted((REPO / "configs").glob("*.yaml")):
        if config.name != "zero2.yaml":
            check_run_config(str(config))


def test_a_section_budget_beside_the_runs_budget_is_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("loop:\n  max_cost_usd: 5\nannotate:\n  max_cost_usd: 50\n")
    with pytest.raises(ConfigError, match="section 'annotate': max_cost_usd is set, and so is loop.max_cost_usd"):
        check_run_config(str(config))


# --- roles: named once, used by every stage, overridden where a section says so ---

def test_roles_are_named_once_and_a_section_or_the_command_line_may_still_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "loop:\n  simulator_model_path: models/SmolLM2-135M-Instruct\n  max_cost_usd: 3\n"
        "roles:\n  simulator_model: gpt-4o-mini\n  judge_model: hosted_vllm/judge\n"
        "  judge_api_base: http://127.0.0.1:9000/v1\n"
        "evaluate:\n  judge_model: gpt-4.1\n  judge_api_base: null\n"
    )
    argv = ["--config", str(config)]
    contexts = parse_config(pipeline.STAGES["contexts"].config, "contexts", argv)
    annotate = parse_config(pipeline.STAGES["annotate"].config, "annotate", argv)
    evaluate = parse_config(pipeline.STAGES["evaluate"].config, "evaluate", argv)
    assert (contexts.simulator_model, contexts.simulator_api_base) == ("gpt-4o-mini", None)  # named: no local base
    assert (annotate.judge_model, annotate.judge_api_base) == ("hosted_vllm/judge", "http://127.0.0.1:9000/v1")
    assert (evaluate.simulator_model, evaluate.judge_model, evaluate.judge_api_base) == ("gpt-4o-mini", "gpt-4.1",
                                                                                       None)
    assert contexts.max_cost_usd == annotate.max_cost_usd == evaluate.max_cost_usd == 3.0  # the run's budget
    cli = parse_config(pipeline.STAGES["annotate"].config, "annotate", [*argv, "--judge_model", "local/m"])
    assert cli.judge_model == "local/m"

    unnamed = tmp_path / "local.yaml"  # no roles: the run's local model plays every role
    unnamed.write_text("loop:\n  simulator_backend: server\n  simulator_port: 8123\n")
    simulate = parse_config(pipeline.STAGES["simulate"].config, "simulate", ["--config", str(unnamed)])
    assert (simulate.simulator_model, simulate.simulator_api_base) == ("hosted_vllm/simulator",
                                                                       "http://127.0.0.1:8123/v1")
    lone = tmp_path / "lone.yaml"  # a stage's own YAML, without a run: its own defaults
    lone.write_text("annotate:\n  judge_max_tokens: 1\n")
    assert parse_config(pipeline.STAGES["annotate"].config, "annotate", ["--config", str(lone)]).judge_model == \
        "hosted_vllm/simulator"

    broken = tmp_path / "broken.yaml"
    broken.write_text("roles:\n  judge_api_base: http://127.0.0.1:9000/v1\n")
    with pytest.raises(ConfigError, match="roles.judge_api_base is set but roles.judge_model is not"):
        check_run_config(str(broken))


def test_the_recipes_name_each_role_once():
    for name in ("collabllm_math", "collabllm_code", "collabllm_docs"):
        text = (REPO / "configs" / f"{name}.yaml").read_text()
        assert "roles:" in text
        for key in ("simulator_model:", "judge_model:", "simulator_api_base:", "judge_api_base:"):
            assert text.count(key) <= 1, (name, key)


def test_a_stage_named_in_loop_plugins_is_in_the_drivers_table_and_its_section_is_checked(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("loop:\n  plugins: [stage_plugin]\n  num_iterations: 1\nshort_contexts:\n  max_words: 5\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "plugins"), str(REPO)])}

    def python(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)

    made = python("collabloop.loop", "env", "--config", str(config), "--run_dir", str(tmp_path / "run"))
    assert made.returncode == 0, made.stderr
    stages = python("collabloop.driver", "stages", "--run_dir", str(tmp_path / "run"), "--iteration", "1")
    assert stages.stdout.split()[:3] == ["contexts", "short_contexts", "generate"], stages.stderr
    config.write_text("loop:\n  plugins: [stage_plugin]\nshort_contexts:\n  max_wrods: 5\n")
    typo = python("collabloop.loop", "check", "--config", str(config))
    assert typo.returncode == 1 and "section 'short_contexts': unknown key 'max_wrods'" in typo.stderr

"""The config parser: defaults < YAML section < command line; unknown keys fail."""

import pytest

from collabloop.config import ConfigError, parse_config
from collabloop.loop import check_run_config
from collabloop.stage_configs import AnnotateConfig, GenerateConfig, SimulateConfig
from tests.conftest import REPO


def test_precedence_defaults_yaml_cli(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("generate:\n  num_candidates: 6\n  temperature: 0.5\nsimulate:\n  num_futures: 3\n")
    cfg = parse_config(GenerateConfig, "generate", ["--config", str(cfg_file), "--temperature", "0.9"])
    assert cfg.num_candidates == 6  # YAML beats the default
    assert cfg.temperature == 0.9  # CLI beats YAML
    assert cfg.max_new_tokens == GenerateConfig().max_new_tokens  # default kept
    sim = parse_config(SimulateConfig, "simulate", ["--config", str(cfg_file)])
    assert sim.num_futures == 3 and sim.window_turns == 2


def test_types_and_collections_from_the_command_line():
    cfg = parse_config(
        AnnotateConfig, "annotate", ["--metric_weights", "{accuracy: 1, token_amount: -1e-4}", "--judge_api_base=null"]
    )
    assert cfg.metric_weights == {"accuracy": 1, "token_amount": -1e-4}
    assert cfg.judge_api_base is None  # null is None where a field may be None, as in the YAML
    cfg = parse_config(AnnotateConfig, "annotate", ["--tokenizer", "null", "--judge_api_base", "~"])
    assert cfg.tokenizer == "null" and cfg.judge_api_base is None  # a plain str field keeps the raw text
    with pytest.raises(ConfigError, match="'num_candidates' must be an integer, got 'many'"):
        parse_config(GenerateConfig, "generate", ["--num_candidates", "many"])


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"command line: unknown key 'num_candidate'. Did you mean 'num_candidates'"):
        parse_config(GenerateConfig, "generate", ["--num_candidate", "4"])
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("generate:\n  temprature: 0.5\n")
    with pytest.raises(ConfigError, match=r"run.yaml, section 'generate': unknown key 'temprature'"):
        parse_config(GenerateConfig, "generate", ["--config", str(cfg_file)])


def test_validation_names_value_and_fix():
    with pytest.raises(ConfigError, match="num_candidates must be >= 2 to build pairs, got 1"):
        GenerateConfig(num_candidates=1)
    with pytest.raises(ConfigError, match=r"unknown metrics \['acuracy'\]"):
        AnnotateConfig(metric_weights={"acuracy": 1.0})


def test_shipped_configs_parse():
    """Every YAML in configs/ (the recipes included) is read as the loop reads it: every section with its
    class, trainer keys against TRL's, on a machine without a GPU."""
    run_configs = [p for p in sorted((REPO / "configs").glob("*.yaml")) if p.name != "zero2.yaml"]
    assert {"demo.yaml", "tiny.yaml", "collabllm_math.yaml", "collabllm_docs.yaml", "collabllm_code.yaml"} <= {
        p.name for p in run_configs}
    for path in run_configs:
        check_run_config(str(path))


def test_run_config_check_catches_typos_in_any_section(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: {}\ndpo:\n  betta: 0.1\n")
    with pytest.raises(ConfigError, match=r"section 'dpo': unknown keys \['betta'\]"):
        check_run_config(str(bad))
    bad.write_text("generat: {}\n")
    with pytest.raises(ConfigError, match="unknown section 'generat'"):
        check_run_config(str(bad))


@pytest.mark.parametrize("same", ["id", "goal"])
def test_the_loop_refuses_eval_tasks_that_overlap_the_training_tasks(tmp_path, capsys, same):
    import json

    from collabloop.loop import main as loop_main
    from tests.conftest import math_task, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", [math_task(i, 2, i) for i in range(3)])
    leaked = math_task(1, 2, 1) if same == "id" else {**math_task(9, 2, 2), "id": "e9"}
    held_out = write_jsonl(tmp_path / "eval.jsonl", [{**math_task(5, 7, 7), "id": "e5"}, leaked])
    argv = ["env", "--run_dir", str(tmp_path / "run"), "--train_tasks", str(train), "--eval_tasks", str(held_out)]
    expected = rf"eval.jsonl:2 \(loop.eval_tasks\): task '{leaked['id']}' has the same {same}"
    with pytest.raises(SystemExit, match=expected):
        loop_main(argv)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
    held_out.write_text(json.dumps({**math_task(5, 7, 7), "id": "e5"}) + "\n")
    loop_main(argv)
    assert "LOOP_EVAL_TASKS=" in capsys.readouterr().out


def test_a_top_level_key_that_is_no_section_is_refused(tmp_path):
    """The loop check refuses it, and so does every stage: one rule, stated where the key is."""
    path = tmp_path / "run.yaml"
    path.write_text("temperature: 0.7\ngenerate: {num_candidates: 2}\n")
    with pytest.raises(ConfigError, match=r"top-level key 'temperature' is not a section"):
        parse_config(GenerateConfig, "generate", ["--config", str(path)])



def test_the_trainer_keys_are_kept_per_version_and_made_again_when_stale(tmp_path, monkeypatch):
    import json

    from collabloop import loop

    monkeypatch.setattr("sys.prefix", str(tmp_path))
    cache = tmp_path / ".collabloop-trainer-keys.json"
    made = loop.trainer_keys()
    assert "beta" in made["dpo"][0] and made["dpo"][1] == ["PreferenceArgs", "DPOConfig"]
    kept = json.loads(cache.read_text())
    assert kept["sections"]["dpo"] == [made["dpo"][0], made["dpo"][1]]
    # Kept: what the file says is what the check uses (here a key removed from it)...
    kept["sections"]["dpo"][0].remove("beta")
    cache.write_text(json.dumps(kept))
    assert "beta" not in loop.trainer_keys()["dpo"][0]
    # ...until TRL, transformers or the code that defines the sections changes: then made again.
    cache.write_text(json.dumps({**kept, "key": kept["key"].replace("trl", "trl-old")}))
    assert loop.trainer_keys() == made and "beta" in json.loads(cache.read_text())["sections"]["dpo"][0]
    cache.write_text("{damaged")
    assert loop.trainer_keys() == made

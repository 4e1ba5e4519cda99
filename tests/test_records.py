"""Record validation and the JSONL reader/writer: errors name file, line and field."""

import json

import pytest

from collabloop.jsonl import PartialOutput, read_records, write_records
from collabloop.records import Context, Generation, Pair, RecordError, Rewarded, Simulation, Task
from tests.conftest import write_jsonl

CONTEXT = {"id": "c1", "task_id": "t1", "prompt": [{"role": "user", "content": "hi"}], "turn": 0}


def test_valid_records_round_trip(tmp_path):
    gen = {**CONTEXT, "responses": ["a", "b"], "gen": {"model": "m"}}
    sim = {**gen, "futures": [[{"messages": [], "terminated": False, "error": None}]] * 2}
    rew = {
        **sim,
        "metrics": [{"accuracy": {"mean": 1.0, "values": [1.0], "errors": [None]}}] * 2,
        "rewards": [1.0, None],
        "future_rewards": [[1.0], [None]],
    }
    for rows, cls in (([CONTEXT], Context), ([gen], Generation), ([sim], Simulation), ([rew], Rewarded)):
        path = write_jsonl(tmp_path / f"{cls.__name__}.jsonl", rows)
        records = read_records(path, cls)
        out = tmp_path / f"{cls.__name__}.out.jsonl"
        write_records(out, records)
        assert [json.loads(x) for x in out.read_text().splitlines()] == [r.to_dict() for r in records]
        assert records[0].to_dict()["id"] == "c1"


@pytest.mark.parametrize(
    "row, field, problem",
    [
        ({k: v for k, v in CONTEXT.items() if k != "task_id"}, "task_id", "missing"),
        ({**CONTEXT, "turn": "0"}, "turn", "integer"),
        ({**CONTEXT, "prompt": [{"role": "bot", "content": "x"}]}, "prompt[0].role", "expected one of"),
        ({**CONTEXT, "prompt": [{"role": "user"}]}, "prompt[0].content", "missing"),
        ({**CONTEXT, "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
         "prompt", "must end with a user turn"),
        ({**CONTEXT, "extra": 1}, "extra", "unknown field"),
        ({**CONTEXT, "id": ""}, "id", "must not be empty"),
    ],
)
def test_bad_context_names_file_line_field(tmp_path, row, field, problem):
    path = write_jsonl(tmp_path / "contexts.jsonl", [CONTEXT | {"id": "ok"}, row])
    with pytest.raises(RecordError) as err:
        read_records(path, Context)
    message = str(err.value)
    assert f"{path}:2" in message
    assert f"field '{field}'" in message
    assert problem in message


def test_incomplete_records_are_rejected(tmp_path):
    gen = {**CONTEXT, "responses": ["a", "b"], "gen": {}}
    sim = {**gen, "futures": [[{"messages": [], "terminated": False, "error": None}]]}  # one list for two responses
    path = write_jsonl(tmp_path / "simulations.jsonl", [sim])
    with pytest.raises(RecordError, match=r"simulations.jsonl:1: field 'futures': holds 1 lists for 2 responses"):
        read_records(path, Simulation)
    rew = {**sim, "futures": sim["futures"] * 2, "metrics": [{}, {}], "rewards": [1.0, float("nan")],
           "future_rewards": [[1.0], [None]]}
    path.write_text(json.dumps(rew) + "\n")  # Python writes NaN, which is not JSON
    with pytest.raises(RecordError, match=r"simulations.jsonl:1: field '<line>': not valid JSON \(NaN is not a JSON"):
        read_records(path, Rewarded)
    with pytest.raises(RecordError, match=r"field 'rewards\[1\]': must be finite"):  # a record built in memory
        Rewarded.from_dict(rew, "memory")
    pair = {"id": "p", "prompt": CONTEXT["prompt"], "chosen": [{"role": "user", "content": "x"}],
            "rejected": [{"role": "assistant", "content": "y"}], "chosen_reward": 1, "rejected_reward": 0, "margin": 1}
    path = write_jsonl(tmp_path / "pairs.jsonl", [pair])
    with pytest.raises(RecordError, match=r"pairs.jsonl:1: field 'chosen': must be a list of exactly one assistant"):
        read_records(path, Pair)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_not_json(tmp_path, constant):
    path = tmp_path / "tasks.jsonl"
    good = {"id": "t1", "task": "math", "goal": "g", "reference": "1"}
    path.write_text(json.dumps(good) + "\n" + f'{{"id": "t2", "task": "math", "goal": "g", "reference": "1", '
                    f'"metadata": {{"difficulty": {constant}}}}}\n')
    with pytest.raises(RecordError, match=rf"tasks.jsonl:2: field '<line>': not valid JSON \({constant} is not"):
        read_records(path, Task)


def test_invalid_json_and_duplicate_ids(tmp_path):
    path = tmp_path / "tasks.jsonl"
    good = {"id": "t1", "task": "math", "goal": "g", "reference": "1"}
    path.write_text(json.dumps(good) + "\n" + '{"id": "t2", "task": \n')
    with pytest.raises(RecordError, match=r"tasks.jsonl:2: field '<line>': not valid JSON"):
        read_records(path, Task)
    write_jsonl(path, [good, good])
    with pytest.raises(RecordError, match=r"tasks.jsonl:2: field 'id': duplicate id 't1' \(first on line 1\)"):
        read_records(path, Task)


def test_partial_output_repairs_torn_last_line_and_refuses_damage(tmp_path):
    out = tmp_path / "contexts.jsonl"
    partial = PartialOutput(out, Context)
    partial.append([Context(**CONTEXT), Context(**{**CONTEXT, "id": "c2"})])
    partial.close()
    # A kill in the middle of a write leaves a line without its newline.
    with open(partial.path, "a") as f:
        f.write('{"id": "c3", "task_id": "t1", "prom')
    again = PartialOutput(out, Context)
    assert sorted(again.load()) == ["c1", "c2"]
    assert again.repaired_bytes > 0
    assert again.path.read_text().endswith("\n")
    assert again.write_output(["c2", "c1"]) == 2
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["c2", "c1"]
    again.discard()  # the stage drops the partial file only after its meta says complete
    assert not again.path.exists()

    # Damage anywhere else is not guessed at.
    partial = PartialOutput(tmp_path / "other.jsonl", Context)
    partial.path.write_text(json.dumps(CONTEXT) + "\nnot json\n" + json.dumps({**CONTEXT, "id": "c2"}) + "\n")
    with pytest.raises(RecordError, match=r"other.jsonl.partial:2: .*delete .*other.jsonl.partial"):
        partial.load()


def test_write_records_is_atomic_on_failure(tmp_path):
    out = tmp_path / "pairs.jsonl"
    out.write_text("previous content\n")

    def broken():
        yield {"id": "a"}
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_records(out, broken())
    assert out.read_text() == "previous content\n"
    assert list(tmp_path.iterdir()) == [out]


def test_temporary_files_are_made_exclusively_and_never_follow_a_placed_link(tmp_path):
    """The fixed temporary names of the config writers followed symbolic links: a link placed at
    `.<name>.tmp` made them overwrite its target. Every writer now goes through `atomic_file` (mkstemp)."""
    from collabloop.config import save_config
    from collabloop.loop import write_run_config
    from collabloop.loop_config import LoopConfig
    from collabloop.stage_configs import PairsConfig

    target = tmp_path / "victim.txt"
    target.write_text("keep me\n")
    out = tmp_path / "run"
    out.mkdir()
    for name in ("pairs.config.yaml", "config.yaml", "pairs.jsonl", "pairs.meta.json"):
        (out / f".{name}.tmp").symlink_to(target)
    save_config(out / "pairs.config.yaml", "pairs", PairsConfig(rewards_path="r.jsonl"))
    write_run_config(LoopConfig(run_dir=str(out)), None)
    write_records(out / "pairs.jsonl", [{"id": "a"}])
    from collabloop.jsonl import write_json

    write_json(out / "pairs.meta.json", {"status": "complete"})
    assert target.read_text() == "keep me\n"
    assert "pairs:" in (out / "pairs.config.yaml").read_text() and (out / "config.yaml").exists()
    assert (out / "pairs.jsonl").read_text() == '{"id": "a"}\n'


def test_outputs_and_configs_get_one_file_mode_from_the_umask(tmp_path):
    import os
    import stat

    from collabloop.config import save_config
    from collabloop.jsonl import FILE_MODE, write_json
    from collabloop.stage_configs import PairsConfig

    write_records(tmp_path / "pairs.jsonl", [{"id": "a"}])
    write_json(tmp_path / "pairs.meta.json", {"status": "complete"})
    save_config(tmp_path / "pairs.config.yaml", "pairs", PairsConfig(rewards_path="r.jsonl"))
    (tmp_path / "plain.txt").write_text("a file made the ordinary way\n")
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in tmp_path.iterdir()}
    assert set(modes.values()) == {FILE_MODE}, modes


def test_an_edit_of_the_code_that_shapes_an_output_makes_it_stale_and_nothing_else(tmp_path, monkeypatch):
    """The fingerprint holds a digest of the source of the modules a stage names: an edit of a prompt or a
    metric there reruns that stage; a stage that names other modules stays up to date."""
    from collabloop.stage import StageRun
    from collabloop.stage_configs import PairsConfig

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "shaping_prompts.py").write_text('PROMPT = "Answer briefly."\n')
    (tmp_path / "other_code.py").write_text("X = 1\n")
    rows = write_jsonl(tmp_path / "rewards.jsonl", [{"id": "a"}])

    def stage(out: str, module: str) -> StageRun:
        return StageRun("pairs", tmp_path / out, Pair, (PairsConfig(),), {"rewards": rows}, code=(module,))

    for out, module in (("shaped.jsonl", "shaping_prompts"), ("other.jsonl", "other_code")):
        run = stage(out, module)
        run.begin()
        run.finish([])
        assert stage(out, module).up_to_date()
        assert json.loads((tmp_path / out).with_suffix(".meta.json").read_text())["code"] == run.code
    (tmp_path / "shaping_prompts.py").write_text('PROMPT = "Answer briefly, and ask when unsure."\n')
    assert not stage("shaped.jsonl", "shaping_prompts").up_to_date()
    assert stage("other.jsonl", "other_code").up_to_date()
    with pytest.raises(ValueError, match="no source file for module 'no_such_module'"):
        stage("x.jsonl", "no_such_module")


@pytest.mark.parametrize("damage", [b'{"stage": "pai', b"\xff\xfe not UTF-8", b'["not", "an object"]'])
def test_a_damaged_meta_file_is_read_as_none_by_every_reader(tmp_path, caplog, damage):
    """One reader of meta files (`stage.read_meta`), one policy: a damaged file is logged and read as none, so
    the stage is not up to date, and inspection and the loop summary go on without it."""
    from collabloop.inspect_run import summarize
    from collabloop.loop import summarize_iteration
    from collabloop.stage import StageRun, read_meta
    from collabloop.stage_configs import PairsConfig

    rows = write_jsonl(tmp_path / "input.jsonl", [{"id": "a"}])

    def stage() -> StageRun:
        return StageRun("pairs", tmp_path / "pairs.jsonl", Pair, (PairsConfig(),), {"rewards": rows})

    run = stage()
    run.begin()
    run.finish([])
    assert stage().up_to_date() and read_meta(run.meta_path)["status"] == "complete"
    assert read_meta(tmp_path / "absent.meta.json") is None and "damaged" not in caplog.text
    run.meta_path.write_bytes(damage)
    assert read_meta(run.meta_path) is None
    assert f"{run.meta_path} is damaged" in caplog.text
    assert not stage().up_to_date()
    assert summarize(tmp_path / "pairs.jsonl")["meta"] is None
    assert summarize_iteration(tmp_path)["stages"] == {}

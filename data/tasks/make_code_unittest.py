"""Code tasks in BigCodeBench's form, written for this project: writes code_unittest.jsonl.

BigCodeBench's problems are not shipped by any package (its `bigcodebench` package downloads them at run
time), so these stand in: a task's tests are a unittest `TestCases` class that calls `task_func` by name,
as BigCodeBench's are, and its metadata holds the entry point, the signature with its docstring and a
canonical solution. They use the standard library only; a task set that imports third-party packages
needs annotate's or evaluate's `sandbox_libraries`.

    python data/tasks/make_code_unittest.py
"""

from task_files import write_task_files

PROBLEMS = [  # (name, signature with docstring, body of the canonical solution, test methods)
    (
        'word_counts',
        '''\
def task_func(text):
    """Count the words of `text` (split on whitespace, lower-cased) and return a dict
    word -> count, ordered by first appearance."""
''',
        '''\
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts
''',
        '''\
    def test_repeats(self):
        self.assertEqual(task_func('a B a'), {'a': 2, 'b': 1})
    def test_order(self):
        self.assertEqual(list(task_func('z y z x')), ['z', 'y', 'x'])
    def test_empty(self):
        self.assertEqual(task_func('   '), {})
''',
    ),
    (
        'merge_intervals',
        '''\
def task_func(intervals):
    """Merge overlapping or touching closed intervals, given as [start, end] lists, and
    return them sorted as a list of [start, end] lists."""
''',
        '''\
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged
''',
        '''\
    def test_overlap(self):
        self.assertEqual(task_func([[5, 7], [1, 3], [2, 4]]), [[1, 4], [5, 7]])
    def test_touching(self):
        self.assertEqual(task_func([[1, 2], [2, 3]]), [[1, 3]])
    def test_none(self):
        self.assertEqual(task_func([]), [])
''',
    ),
    (
        'parse_settings',
        '''\
import json


def task_func(text):
    """Parse lines of `key = value` (blank lines and lines starting with # skipped) into a
    dict; a value that is valid JSON becomes that value, any other stays a stripped string."""
''',
        '''\
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        key, _, value = line.partition('=')
        value = value.strip()
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out
''',
        '''\
    def test_types(self):
        self.assertEqual(task_func('a = 1\\nb = [1, 2]\\nc = hello\\n'), {'a': 1, 'b': [1, 2], 'c': 'hello'})
    def test_comments(self):
        self.assertEqual(task_func('# x = 1\\n\\ny = true'), {'y': True})
''',
    ),
    (
        'group_anagrams',
        '''\
def task_func(words):
    """Group words that are anagrams of each other: return a list of groups, each a sorted
    list of words, the groups sorted by their first word."""
''',
        '''\
    groups = {}
    for word in words:
        groups.setdefault(''.join(sorted(word)), []).append(word)
    return sorted(sorted(g) for g in groups.values())
''',
        '''\
    def test_groups(self):
        self.assertEqual(task_func(['tea', 'eat', 'tan', 'ate', 'nat', 'bat']),
                         [['ate', 'eat', 'tea'], ['bat'], ['nat', 'tan']])
    def test_single(self):
        self.assertEqual(task_func(['a']), [['a']])
''',
    ),
    (
        'moving_average',
        '''\
def task_func(values, window):
    """The mean of every run of `window` consecutive values, as a list of floats rounded to
    2 places; raise ValueError when window is not between 1 and len(values)."""
''',
        '''\
    if not 1 <= window <= len(values):
        raise ValueError('bad window')
    return [round(sum(values[i:i + window]) / window, 2) for i in range(len(values) - window + 1)]
''',
        '''\
    def test_means(self):
        self.assertEqual(task_func([1, 2, 3, 4], 2), [1.5, 2.5, 3.5])
    def test_rounding(self):
        self.assertEqual(task_func([1, 1, 2], 3), [1.33])
    def test_bad_window(self):
        with self.assertRaises(ValueError):
            task_func([1, 2], 3)
''',
    ),
    (
        'balanced_brackets',
        '''\
def task_func(text):
    """True if every bracket in `text` ((), [], {}) is closed in the right order; other
    characters are ignored."""
''',
        '''\
    pairs, stack = {')': '(', ']': '[', '}': '{'}, []
    for ch in text:
        if ch in '([{':
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack
''',
        '''\
    def test_balanced(self):
        self.assertTrue(task_func('f(a[1]) {x}'))
    def test_unbalanced(self):
        self.assertFalse(task_func('(]'))
        self.assertFalse(task_func('(('))
    def test_returns_a_bool(self):
        self.assertIs(task_func(''), True)
''',
    ),
]


def task(name: str, signature: str, body: str, tests: str) -> dict:
    doc = signature.split('"""')[1].replace("\n    ", " ")
    return {
        "id": f"code-unittest-{name}",
        "task": "code",
        "goal": (f"You want a Python function `task_func` that does this: {doc}\n\nIts signature and docstring:\n\n"
                 f"{signature}\nYou are done when the assistant gives you working code for it."),
        "reference": f"import unittest\n\n\nclass TestCases(unittest.TestCase):\n{tests}",
        "prompt": None,  # the simulated user opens, vaguely, from the goal
        "metadata": {"entry_point": "task_func", "signature": signature, "canonical_solution": signature + body,
                     "source": "collabloop (BigCodeBench-style)"},
    }


if __name__ == "__main__":
    write_task_files({"code_unittest": [task(*p) for p in PROBLEMS]})

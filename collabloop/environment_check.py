"""Whether a Python environment this project did not install fits its pins: for a node without a package
registry (common on clusters), where `COLLABLOOP_USE_EXISTING=1 bash setup.sh` uses the environment
that is there instead of installing one.

    python collabloop/environment_check.py gpu|cpu [--requirements DIR]

Prints every pinned package whose installed version differs, with the file and line of its pin, and
exits 1 when one of the packages whose API the pipeline calls directly (`API_PACKAGES`) is missing or
differs: TRL, transformers and vLLM change their APIs between releases. Other differences are printed
and allowed. Runs before collabloop is installed: it imports nothing of it.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

# Called directly, with arguments that move between releases; a run needs exactly the pinned version.
API_PACKAGES = ("trl", "transformers", "accelerate", "deepspeed", "peft", "datasets", "litellm", "vllm")
# Which files pin what each kind of machine installs (torch and vLLM come with the kind).
REQUIREMENTS = {"gpu": ("common.txt", "gpu.txt"), "cpu": ("common.txt", "vllm-cpu-deps.txt")}
_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def pins(folder: Path, kind: str) -> dict[str, tuple[str, str]]:
    """Package -> (pinned version, 'file:line') for a machine of `kind`."""
    out = {}
    for name in REQUIREMENTS[kind]:
        path = folder / name
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = _PIN.match(line.strip())
            if match:
                out[canonical(match.group(1))] = (match.group(2), f"{path}:{number}")
    return out


def installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def differences(folder: Path, kind: str, version_of=installed) -> tuple[list[str], list[str]]:
    """(blocking lines, allowed lines): each pin the environment does not meet, said as it is."""
    blocking, allowed = [], []
    for package, (pinned, where) in sorted(pins(folder, kind).items()):
        have = version_of(package)
        if have is not None and have.split("+")[0] == pinned.split("+")[0]:
            continue
        line = f"{package}: {'not installed' if have is None else have + ' installed'}, {pinned} pinned ({where})"
        (blocking if package in API_PACKAGES else allowed).append(line)
    return blocking, allowed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(REQUIREMENTS))
    parser.add_argument("--requirements", default=str(Path(__file__).resolve().parent.parent / "requirements"))
    args = parser.parse_args(argv)
    blocking, allowed = differences(Path(args.requirements), args.kind)
    for line in allowed:
        print(f"  differs, allowed: {line}")
    for line in blocking:
        print(f"  differs, needed:  {line}")
    if blocking:
        print(f"setup: this environment ({sys.executable}) does not fit {len(blocking)} pin(s) of a package "
              "collabloop calls directly (above); install those versions into it, from wheels brought along if "
              "the node has no registry, and run setup again")
        return 1
    print(f"setup: {sys.executable} fits the pins collabloop needs"
          + (f" ({len(allowed)} other package(s) differ, allowed)" if allowed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

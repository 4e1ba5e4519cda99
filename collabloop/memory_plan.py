"""What a model needs on a GPU, and whether the vLLM engines that share one fit, checked before any loads.

vLLM gives an engine the share `gpu_memory_utilization` of the whole GPU; in it go the weights, a reserve
for activations and the sampler, and the KV cache, which must hold at least one sequence of the engine's
`max_model_len` (vLLM refuses to start otherwise, after loading the weights). Engines on one GPU (the
policy's, a local simulator or judge of another model, the run's simulator server) each check their
share against the memory free when they start, so their shares must add up to less than the GPU. This
module works it out from the models' config.json and safetensors headers, on any machine: a plan for a
GPU node can be printed on a laptop (`python -m collabloop.loop plan_memory`).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from collabloop.config_error import ConfigError

GIB = 2**30
# Per engine, inside its share: activations of the largest batch, the sampler, the CUDA context. vLLM
# measures it at start (a profile run); 2 GiB covers an 8B model at its default batch limits.
RESERVE_GIB = 2.0
# The shares of one GPU's engines together: the rest is the CUDA contexts and whatever else runs there.
MAX_TOTAL_SHARE = 0.95
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # 'auto' on a GPU: the model's half type
_SAFETENSORS_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1,
                      "F8_E4M3": 1, "F8_E5M2": 1}


def model_config(model: str) -> dict:
    """The model folder's config.json, or an error that names the folder."""
    path = Path(model) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: is {model!r} a model folder (config.json, weights, tokenizer)?")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable as JSON ({e})") from None
    return config.get("text_config", config)  # a multimodal model: its language model's settings


def context_length(model: str) -> int:
    """The longest sequence the model was made for, in tokens (its config.json)."""
    config = model_config(model)
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    raise ConfigError(f"{Path(model) / 'config.json'} names no context length (max_position_embeddings); set "
                      "max_model_len in the stage's section")


def kv_bytes_per_token(model: str, dtype: str) -> int:
    """KV cache bytes one token takes: keys and values of every layer's KV heads."""
    c = model_config(model)
    heads = c.get("num_key_value_heads") or c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    return 2 * c["num_hidden_layers"] * heads * head_dim * DTYPE_BYTES[dtype]


def _safetensors_parameters(folder: Path) -> int | None:
    """Parameters counted from the headers of the folder's safetensors files (no tensor is read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for size in tensor["shape"]:
                    count *= size
                total += count
    return total


def parameter_count(model: str) -> int:
    """The model's parameters: from its weights' headers, or, for a folder holding only a config (a plan made
    away from the weights), estimated from a decoder-only transformer's shapes."""
    counted = _safetensors_parameters(Path(model))
    if counted is not None:
        return counted
    c = model_config(model)
    hidden, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or hidden // heads
    kv_heads = c.get("num_key_value_heads") or heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * c.get("intermediate_size", 4 * hidden)
    embeddings = vocab * hidden * (1 if c.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp) + embeddings


@dataclass(frozen=True)
class Engine:
    """One vLLM engine on the GPU: who it serves, its model, its share of the GPU, its context length."""

    role: str  # "policy", "local simulator", "server" ...
    model: str
    share: float  # gpu_memory_utilization
    max_model_len: int  # 0: the model's own
    dtype: str = "auto"


@dataclass(frozen=True)
class EnginePlan:
    engine: Engine
    weights_gib: float
    kv_cache_gib: float  # what is left for it in the share
    max_model_len: int
    kv_tokens: int  # tokens the KV cache holds

    def line(self) -> str:
        e = self.engine
        return (f"{e.role:<16} {e.model}: share {e.share:.2f}, weights {self.weights_gib:.1f} GiB, KV cache "
                f"{self.kv_cache_gib:.1f} GiB = {self.kv_tokens:,} tokens (max_model_len {self.max_model_len:,})")


def plan_engines(engines: list[Engine], gpu_memory_gib: float, where: str) -> list[EnginePlan]:
    """Each engine's weights and KV cache on a GPU of `gpu_memory_gib`; a ConfigError naming the settings to
    change when the shares add up to more than the GPU, or a share cannot hold its weights and one
    sequence of its max_model_len. `where`: what the engines are for (a stage, a recipe), for the message."""
    total = sum(e.share for e in engines)
    if total > MAX_TOTAL_SHARE:
        shares = " + ".join(f"{e.role} {e.share:g}" for e in engines)
        raise ConfigError(
            f"{where}: the vLLM engines on one GPU take {shares} = {total:.2f} of it, more than {MAX_TOTAL_SHARE}; "
            "lower gpu_memory_utilization (policy), local_gpu_memory_utilization (a local simulator or judge) or "
            "loop.server_gpu_memory_utilization (the run's server)"
        )
    plans = []
    for e in engines:
        weights = parameter_count(e.model) * DTYPE_BYTES[e.dtype] / GIB
        kv = e.share * gpu_memory_gib - weights - RESERVE_GIB
        length = e.max_model_len or context_length(e.model)
        per_token = kv_bytes_per_token(e.model, e.dtype)
        tokens = int(kv * GIB // per_token) if kv > 0 else 0
        if tokens < length:
            fits = max(0, tokens // 1024 * 1024)
            raise ConfigError(
                f"{where}: the {e.role} engine ({e.model}) gets {e.share:g} of {gpu_memory_gib:g} GiB = "
                f"{e.share * gpu_memory_gib:.1f} GiB: {weights:.1f} GiB of weights and {RESERVE_GIB:g} reserved leave "
                f"{max(kv, 0):.1f} GiB of KV cache, {tokens:,} tokens, fewer than one sequence of max_model_len "
                f"{length:,}; raise its share or set its max_model_len to at most {fits:,}"
            )
        plans.append(EnginePlan(e, weights, kv, length, tokens))
    return plans


def stage_engines(cfg, loop=None, trained_policy: bool = False) -> list[Engine]:
    """The engines a stage's config starts on its GPU: the policy's, a local simulator or judge of another
    model (one of the policy's model samples from the policy's engine), and the run's simulator server,
    which lives across stages on the first visible GPU (`loop`: the run's settings; None for a stage run
    alone). `trained_policy`: plan for a policy trained by the run, a model of its own even where `cfg.model`
    names its starting point."""
    from collabloop.local_llm import is_local, local_path

    engines: list[Engine] = []
    seen: set[str] = set()
    if hasattr(cfg, "gpu_memory_utilization") and getattr(cfg, "model", ""):
        engines.append(Engine("policy", cfg.model, cfg.gpu_memory_utilization, cfg.max_model_len, cfg.dtype))
        if not trained_policy:
            seen.add(os.path.realpath(cfg.model))
    for field in ("simulator_model", "judge_model"):
        model = getattr(cfg, field, "") or ""
        if is_local(model) and os.path.realpath(local_path(model)) not in seen:
            seen.add(os.path.realpath(local_path(model)))
            engines.append(Engine(f"local {field.removesuffix('_model')}", local_path(model),
                                  cfg.local_gpu_memory_utilization, cfg.local_max_model_len))
    if loop is not None and loop.simulator_backend == "server" and loop.simulator_model_path:
        engines.append(Engine("server", loop.simulator_model_path, loop.server_gpu_memory_utilization,
                              loop.server_max_model_len))
    return engines


def gpu_memory_gib() -> float:
    """The first visible GPU's memory."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory / GIB


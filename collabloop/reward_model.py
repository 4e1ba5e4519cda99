"""A sequence-classification reward model, scored in batches.

Online-RLHF's annotation scores one text at a time; here conversations are
sorted by length and scored in padded batches, so a batch holds texts of
similar length and little compute goes to padding. Scores come back in input
order and match one-at-a-time scoring (see tests/test_reward_model.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def resolve_device_dtype(dtype: str, cuda_available: bool | None = None) -> tuple[str, str]:
    """Where the reward model runs and in which dtype: a GPU in bfloat16 when there is one ('auto'), else the
    CPU in float32 (bfloat16 on a CPU without native support is several times slower)."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if dtype == "auto":
        dtype = "bfloat16" if cuda_available else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"reward model dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return ("cuda" if cuda_available else "cpu"), dtype


class RewardModelScorer:
    """Scores chat conversations with a `AutoModelForSequenceClassification` model (one label)."""

    def __init__(self, model_path: str, batch_size: int = 16, max_length: int = 2048, dtype: str = "auto"):
        """`dtype` 'auto': bfloat16 on a GPU (where the model then runs), float32 on the CPU."""
        import torch
        from transformers import AutoModelForSequenceClassification

        from collabloop.training import load_tokenizer

        if not Path(model_path, "config.json").exists():
            raise FileNotFoundError(
                f"reward model {model_path!r} is not a model folder (no config.json); train one with "
                "dpo_iteration/run_rm.py or point reward_model at a sequence-classification checkpoint"
            )
        if batch_size < 1:
            raise ValueError(f"reward model batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = load_tokenizer(model_path)
        self.device, dtype = resolve_device_dtype(dtype)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=getattr(torch, dtype))
        self.model.to(self.device)
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"reward model {model_path!r} has {self.model.config.num_labels} labels; a reward model has 1"
            )
        # The classifier reads the last token that is not padding; it must know which token pads.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.texts_truncated = 0

    def render(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        if hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding even so
            ids = ids["input_ids"]
        if len(ids) > self.max_length:
            # Keep the end: the reply being judged is at the end of the conversation.
            self.texts_truncated += 1
            ids = ids[-self.max_length :]
        return list(ids)

    def score(self, conversations: list[list[dict]], progress: str | None = None) -> list[float]:
        """One scalar reward per conversation, in input order."""
        import torch

        encoded = [self.render(c) for c in conversations]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if progress:
            from tqdm.auto import tqdm

            from collabloop.console import progress_stream

            batches = tqdm(batches, desc=progress, file=progress_stream())
        scores: list[float | None] = [None] * len(encoded)
        pad = self.tokenizer.pad_token_id
        with torch.no_grad():
            for batch in batches:
                width = max(len(encoded[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    attention[row, : len(encoded[i])] = 1
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=attention.to(self.device)).logits
                for row, i in enumerate(batch):
                    scores[i] = float(logits[row, 0].float())
        return scores  # type: ignore[return-value]

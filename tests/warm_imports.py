"""What tests/warm.py's server imports once, before it forks each run: the heavy libraries of the stages."""

import litellm  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoTokenizer  # noqa: F401
from vllm import LLM, SamplingParams  # noqa: F401

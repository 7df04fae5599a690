"""Shared, cached model loading for the engine tests (loading the default model once per process
keeps the engine tests within their time budget)."""
from __future__ import annotations

import functools
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "def fibonacci(n):",
    "List three colors:",
    "Explain gravity to a child in one sentence.",
    "1, 2, 3, 4,",
    "The quick brown fox",
    "What is the boiling point of water?",
    "Translate 'good morning' to Spanish:",
    "Once upon a time, in a small village,",
]


def default_model_or_skip() -> str:
    from pagedinfer.loader import default_model_path

    try:
        path = default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing")
    return path


@functools.lru_cache(maxsize=None)
def loaded_model(dtype: torch.dtype = torch.float32, max_positions: int = 1024):
    from pagedinfer.loader import load_model

    return load_model(default_model_or_skip(), dtype, max_positions, progress=False)[0]


@functools.lru_cache(maxsize=None)
def tokenizer():
    from pagedinfer.loader import load_tokenizer

    return load_tokenizer(default_model_or_skip())


def make_llm(dtype: torch.dtype = torch.float32, **kwargs):
    """A fresh engine over the cached model (its own block pool and scheduler)."""
    from pagedinfer import LLM

    kwargs.setdefault("kv_cache_memory", "64MiB")
    return LLM(model=loaded_model(dtype), tokenizer=tokenizer(), dtype=dtype, progress=False,
               **kwargs)


# The default model's shape, as documented (PERF.md), independent of pagedinfer's GGUF reader.
SMOLLM2_CONFIG = dict(num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                      rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                      max_position_embeddings=8192, bos_token_id=1, eos_token_id=2)


@functools.lru_cache(maxsize=None)
def hf_reference():
    """HF transformers' LlamaForCausalLM with the GGUF's weights dequantized to fp32 by the gguf
    package, named and un-permuted by transformers' own GGUF code (what
    from_pretrained(gguf_file=...) does; that path needs `accelerate`, not installed here)."""
    transformers = pytest.importorskip("transformers")
    import gguf
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    config = transformers.LlamaConfig(**SMOLLM2_CONFIG)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    processor = LlamaTensorProcessor(config=config.to_dict())
    # gguf's own HF -> GGUF name table (transformers' get_gguf_hf_weights_map rebuilds it per
    # submodule, which takes seconds).
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    names = {table.get_name(k.rsplit(".", 1)[0]) + ".weight": k for k in model.state_dict()
             if k != "lm_head.weight"}
    state = {}
    for t in gguf.GGUFReader(default_model_or_skip()).tensors:
        w = processor.process(gguf.quants.dequantize(t.data, t.tensor_type), t.name).weights
        state[names[t.name]] = torch.from_numpy(w.copy()).float()
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its buffers were meta
    return model.eval()


@pytest.fixture(scope="module")
def one_thread():
    """The engine tests check results, not speed; one thread keeps them fast on a shared machine
    (two spinning OpenMP threads on a busy 2-core box make small ops ~20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

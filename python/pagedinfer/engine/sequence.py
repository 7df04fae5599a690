"""Sequence: the state of one request as the engine advances it. It only holds state; the block
manager fills `block_table`, the scheduler moves `status` and `num_computed_tokens`, the runner
reads them, the LLM front end fills the text fields."""
from __future__ import annotations

import enum
import time

import torch

from pagedinfer.engine.params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # not yet scheduled, or preempted (its KV freed; recomputed when resumed)
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """token_ids = prompt followed by the generated tokens. The KV of the first
    `num_computed_tokens` of them is in the cache (slots given by `block_table`); the last
    sampled token's KV is computed in the next step, so a decoding sequence has
    num_computed_tokens == len(token_ids) - 1."""

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                 prompt: str | None = None, generator: torch.Generator | None = None):
        self.request_id = request_id
        self.prompt = prompt
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.generator = generator  # per-request RNG (params.seed), else None: the engine's
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # prefix-cache chain hashes of its full blocks
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache (first schedule)
        self.num_preemptions = 0
        self.finish_reason: str | None = None  # "stop", "length", "abort", "error"
        self.error: str | None = None
        # Detokenized output, filled by the front end (incremental, see llm.py).
        self.output_text = ""
        self.prefix_offset = 0
        self.read_offset = 0
        self.arrival_time = time.perf_counter()
        self.first_token_time: float | None = None
        self.finish_time: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def is_prefilling(self) -> bool:
        """True while tokens other than the last sampled one still lack KV."""
        return self.num_tokens - self.num_computed_tokens > 1 or self.num_output_tokens == 0

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, status={self.status.value}, "
                f"tokens={self.num_tokens}, computed={self.num_computed_tokens}, "
                f"blocks={self.block_table})")

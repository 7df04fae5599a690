"""What LLM.generate returns, shaped like vLLM's RequestOutput."""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedinfer.engine.sequence import Sequence


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", "abort", "error", or None while running


@dataclass
class RequestMetrics:
    """Times in seconds (time.perf_counter). time_to_first_token counts from the request's
    arrival; decode_tokens_per_s is over the tokens after the first."""

    arrival_time: float
    first_token_time: float | None
    finish_time: float | None
    num_prompt_tokens: int
    num_cached_tokens: int  # prompt tokens served from the prefix cache
    num_generated_tokens: int
    num_preemptions: int

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def decode_tokens_per_s(self) -> float | None:
        if self.finish_time is None or self.first_token_time is None or self.num_generated_tokens < 2:
            return None
        span = self.finish_time - self.first_token_time
        return (self.num_generated_tokens - 1) / span if span > 0 else None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    error: str | None = None  # why the request failed (finish_reason "error")
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_seq(cls, seq: Sequence) -> "RequestOutput":
        completion = CompletionOutput(0, seq.output_text, seq.output_token_ids, seq.finish_reason)
        metrics = RequestMetrics(seq.arrival_time, seq.first_token_time, seq.finish_time,
                                 seq.num_prompt_tokens, seq.num_cached_tokens,
                                 seq.num_output_tokens, seq.num_preemptions)
        return cls(seq.request_id, seq.prompt, seq.token_ids[: seq.num_prompt_tokens],
                   [completion], seq.is_finished, metrics, seq.error)

"""SamplingParams: how one request is sampled and when it stops. Validated on construction, so a
bad value raises a ValueError naming the field before any work is scheduled."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """temperature 0 means greedy. top_k 0 or -1 and top_p 1.0 disable those filters. seed makes
    one request's sampling reproducible whatever else is in the batch. Generation stops at the
    first of: max_tokens new tokens, an end-of-sequence token (unless ignore_eos), a token in
    stop_token_ids, or a string in stop (the text is cut before the stop string)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        _check(isinstance(self.max_tokens, int) and self.max_tokens >= 1,
               f"max_tokens must be an int >= 1, got {self.max_tokens!r}")
        _check(isinstance(self.temperature, (int, float)) and 0.0 <= self.temperature < float("inf"),
               f"temperature must be a finite float >= 0, got {self.temperature!r}")
        _check(isinstance(self.top_k, int) and (self.top_k >= 0 or self.top_k == -1),
               f"top_k must be an int >= 0 (or -1 for no limit), got {self.top_k!r}")
        _check(isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0,
               f"top_p must be in (0, 1], got {self.top_p!r}")
        _check(self.seed is None or isinstance(self.seed, int),
               f"seed must be an int or None, got {self.seed!r}")
        _check(all(isinstance(s, str) and s for s in self.stop),
               f"stop must be non-empty strings, got {self.stop!r}")
        _check(all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids),
               f"stop_token_ids must be non-negative ints, got {self.stop_token_ids!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams: {message}")

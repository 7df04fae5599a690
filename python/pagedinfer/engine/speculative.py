"""Speculative decoding: the configuration and the verification rule (pure functions).

A proposer drafts tokens x_1..x_n for a sequence; the target computes, in one forward pass over
the n + 1 query tokens [last, x_1, .., x_n], its next-token distributions p_0..p_n (p_i is the
distribution of the token after x_i). `verify` then keeps the target's exact output
distribution, whatever the draft (Leviathan et al. 2023, Chen et al. 2023):

    for i = 1..n:   accept x_i with probability min(1, p_{i-1}(x_i) / q_{i-1}(x_i))
                    on the first rejection: emit y ~ norm(max(0, p_{i-1} - q_{i-1})) and stop
    all accepted:   emit a bonus token y ~ p_n

so each verification emits between 1 and n + 1 tokens. q_i is the draft's distribution that x_i
was drawn from; a model-free proposer (n-gram lookup) proposes deterministically, so its q is a
point mass on x_i: x_i is kept with probability p(x_i) and the residual is p with x_i removed.
p and q are both the *filtered* distributions (temperature, top-k, top-p of the request, applied
the same way by Sampler.probs), so the emitted tokens follow exactly what the sampler alone
would have drawn from. Greedy requests (temperature 0) are the limit case: accept while the draft
equals the target's argmax, then emit the target's argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

METHODS = ("draft", "int4-self", "ngram")
MAX_SPECULATIVE_TOKENS = 16
DRAFT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class SpeculativeConfig:
    """method: "draft" (model = a path of a model with the target's vocabulary), "int4-self"
    (the target's own float weights quantized to INT4, group 32) or "ngram" (prompt lookup: the
    last prompt_lookup_max .. prompt_lookup_min tokens matched earlier in the context).
    num_speculative_tokens: k, the tokens drafted per sequence and step (1..16).
    draft_dtype: the draft model's activation and KV dtype ("bfloat16", "float16", "float32").
    Default: bfloat16 when the target runs in float32, else the target's. The draft's numerics
    only decide which tokens are proposed; the target's verification decides the output, so a
    bf16 draft (the INT4 kernels' fast path: ~1.5x faster per token than fp32 here) behind an
    fp32 target keeps the output exact."""

    method: str
    num_speculative_tokens: int = 4
    model: str | None = None
    prompt_lookup_max: int = 4
    prompt_lookup_min: int = 2  # 1-token matches are mostly chance: drafts that get rejected
    draft_dtype: str | None = None

    @classmethod
    def from_dict(cls, spec: dict | "SpeculativeConfig") -> "SpeculativeConfig":
        if isinstance(spec, SpeculativeConfig):
            spec.validate()
            return spec
        if not isinstance(spec, dict):
            raise TypeError(f"speculative: expected a dict, got {type(spec).__name__}")
        known = {"method", "num_speculative_tokens", "model", "prompt_lookup_max",
                 "prompt_lookup_min", "draft_dtype"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"speculative: unknown key(s) {unknown}; known: {sorted(known)}")
        if "method" not in spec:
            raise ValueError(f"speculative: 'method' is required, one of {list(METHODS)}")
        config = cls(**spec)
        config.validate()
        return config

    def draft_torch_dtype(self, target_dtype: torch.dtype) -> torch.dtype:
        if self.draft_dtype is not None:
            return DRAFT_DTYPES[self.draft_dtype]
        return torch.bfloat16 if target_dtype == torch.float32 else target_dtype

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"speculative: unknown method {self.method!r}; choose one of "
                             f"{list(METHODS)}")
        k = self.num_speculative_tokens
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_SPECULATIVE_TOKENS:
            raise ValueError(f"speculative: num_speculative_tokens must be an int in "
                             f"1..{MAX_SPECULATIVE_TOKENS}, got {k!r}")
        if self.method == "draft" and not self.model:
            raise ValueError("speculative: method 'draft' needs model= (a path to the draft model)")
        if self.method != "draft" and self.model is not None:
            raise ValueError(f"speculative: model= is only used by method 'draft', got "
                             f"model={self.model!r} with method {self.method!r}")
        if self.draft_dtype is not None and (self.method == "ngram"
                                             or self.draft_dtype not in DRAFT_DTYPES):
            raise ValueError(f"speculative: draft_dtype must be one of {list(DRAFT_DTYPES)} and "
                             f"needs a draft model (method 'draft' or 'int4-self'), got "
                             f"{self.draft_dtype!r} with method {self.method!r}")
        lo, hi = self.prompt_lookup_min, self.prompt_lookup_max
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(f"speculative: need 1 <= prompt_lookup_min <= prompt_lookup_max, got "
                             f"{lo!r} and {hi!r}")


def verify_greedy(draft_tokens: list[int], target_argmax: list[int]) -> list[int]:
    """Greedy verification. target_argmax: the target's argmax at the n + 1 positions.
    Returns the emitted tokens: the drafts while they equal the target's choice, then the
    target's own choice (the correction, or the bonus token when all n match)."""
    out = []
    for x, y in zip(draft_tokens, target_argmax):
        if x != y:
            break
        out.append(x)
    out.append(target_argmax[len(out)])
    return out


def verify(draft_tokens: list[int], target_probs: torch.Tensor, draft_probs: torch.Tensor | None,
           generator: torch.Generator) -> list[int]:
    """Exact rejection sampling (the rule in the module docstring).

    draft_tokens  n ints, x_1..x_n
    target_probs  float [n + 1, V]: p_0..p_n, each row a (filtered) distribution
    draft_probs   float [n, V]: q_0..q_{n-1} that x_1..x_n were drawn from; None = point masses
    generator     the random source (a request's own generator when it has a seed)
    Returns the 1..n+1 emitted tokens. Draw order is fixed (one uniform per examined draft, then
    one exponential race over V), so a seeded request replays exactly."""
    n = len(draft_tokens)
    if target_probs.shape[0] != n + 1 or (draft_probs is not None and draft_probs.shape[0] != n):
        raise ValueError(f"verify: {n} draft tokens need target_probs [n+1, V] and draft_probs "
                         f"[n, V], got {list(target_probs.shape)} and "
                         f"{None if draft_probs is None else list(draft_probs.shape)}")
    out: list[int] = []
    if n:
        idx = torch.tensor(draft_tokens)
        rows = torch.arange(n)
        p_x = target_probs[rows, idx].tolist()
        q_x = [1.0] * n if draft_probs is None else draft_probs[rows, idx].tolist()
        uniforms = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
    for i in range(n):
        x, p, q = draft_tokens[i], p_x[i], q_x[i]
        # Accept with probability min(1, p / q): u < p / q, written without dividing (q > 0
        # whenever x was drawn from q; a zero q is treated as "never proposed": reject).
        if uniforms[i] * q < p:
            out.append(x)
            continue
        if draft_probs is None:
            residual = target_probs[i].clone()
            residual[x] = 0.0
        else:
            residual = (target_probs[i] - draft_probs[i]).clamp_(min=0.0)
        if not float(residual.sum()) > 0.0:  # p <= q everywhere only if p == q: cannot reject
            residual = target_probs[i]
        out.append(_draw(residual, generator))
        return out
    out.append(_draw(target_probs[n], generator))
    return out


def _draw(weights: torch.Tensor, generator: torch.Generator) -> int:
    """One token from the unnormalized weights [V] (the exponential race argmax(w / E),
    E ~ Exp(1), as in Sampler: it samples exactly from w / sum(w))."""
    race = torch.empty(weights.shape, dtype=torch.float32).exponential_(generator=generator)
    return int((weights.float() / race).argmax())

"""Scheduler: decides which sequences run in the next step and how many tokens each computes.

Continuous batching with chunked prefill, in the style of vLLM v1: each step has a token budget
(max_num_batched_tokens). Running sequences go first, oldest first (a decode costs one token, an
unfinished prefill takes what is left of the budget); then waiting sequences are admitted first
come, first served, while the budget, max_num_seqs and the free blocks allow. When a running
sequence needs a block and none is free, the newest running sequence is preempted: its blocks
are freed and it goes back to the front of the queue, to be recomputed later (its prefix is
often still cached, so recomputation is cheap).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from pagedinfer.engine.block_manager import BlockManager
from pagedinfer.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """seqs[i] computes num_tokens[i] tokens, from seqs[i].num_computed_tokens on; it samples a
    token when that reaches the end of its known tokens."""

    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    num_preempted: int = 0

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 64,
                 max_num_batched_tokens: int = 2048, max_model_len: int = 8192,
                 eos_token_ids: tuple[int, ...] = ()):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError(f"Scheduler: max_num_seqs and max_num_batched_tokens must be >= 1, got "
                             f"{max_num_seqs} and {max_num_batched_tokens}")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = set(eos_token_ids)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queues seq; a request that could never run raises ValueError (others are unaffected)."""
        if seq.num_tokens == 0:
            raise ValueError(f"request {seq.request_id}: the prompt is empty")
        if seq.num_tokens >= self.max_model_len:
            raise ValueError(f"request {seq.request_id}: the prompt has {seq.num_tokens} tokens, "
                             f"the model's limit is {self.max_model_len} (prompt + at least 1 new)")
        longest = min(seq.num_tokens + seq.params.max_tokens, self.max_model_len)
        bm = self.block_manager
        if bm.blocks_needed(longest) > bm.num_blocks:
            raise ValueError(f"request {seq.request_id}: {longest} tokens need "
                             f"{bm.blocks_needed(longest)} KV blocks, the pool has {bm.num_blocks}; "
                             f"raise kv_cache_memory or lower max_tokens")
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        bm, batch = self.block_manager, ScheduledBatch()
        budget = self.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not bm.can_allocate(seq, seq.num_computed_tokens + n):
                victim = self.running.pop()  # the newest
                self._preempt(victim)
                batch.num_preempted += 1
                if victim is seq:
                    break
            else:
                bm.allocate(seq, seq.num_computed_tokens + n)
                batch.seqs.append(seq)
                batch.num_tokens.append(n)
                budget -= n
                i += 1
                continue
            break
        while (self.waiting and budget > 0 and len(self.running) < self.max_num_seqs
               and not batch.num_preempted):
            seq = self.waiting[0]
            prefix = bm.lookup_prefix(seq)
            hit = len(prefix[0]) * bm.block_size
            n = min(seq.num_tokens - hit, budget)
            if not bm.can_allocate(seq, hit + n, prefix[0]):
                break
            bm.allocate(seq, hit + n, prefix)
            seq.num_computed_tokens = hit
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = hit
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_tokens.append(n)
            budget -= n
        return batch

    def update(self, batch: ScheduledBatch, sampled: list[int | None]) -> list[Sequence]:
        """Advances each scheduled sequence by its computed tokens and appends its sampled token
        (None: a prefill chunk that samples nothing). Returns the sequences that finished."""
        finished = []
        for seq, n, token in zip(batch.seqs, batch.num_tokens, sampled):
            seq.num_computed_tokens += n
            self.block_manager.commit(seq)
            if token is None:
                continue
            seq.append_token(token)
            reason = self._stop_reason(seq, token)
            if reason is not None:
                self.finish(seq, reason)
                finished.append(seq)
        return finished

    def finish(self, seq: Sequence, reason: str) -> None:
        """Ends seq (stop, length, abort, error) and frees its blocks; idempotent."""
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free_seq(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.finish_time = time.perf_counter()

    def abort(self, request_id: str) -> Sequence | None:
        for seq in [*self.running, *self.waiting]:
            if seq.request_id == request_id:
                self.finish(seq, "abort")
                return seq
        return None

    def _stop_reason(self, seq: Sequence, token: int) -> str | None:
        params = seq.params
        if token in params.stop_token_ids or (not params.ignore_eos and token in self.eos_token_ids):
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free_seq(seq)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

"""Scheduler + BlockManager together, without a model: a fake runner stores each token id in its
KV slot and checks, every step, that each scheduled sequence's context is intact in the slots its
block table names (prefix hits, chunked prefill and preemption included), that it never writes
into a shared or cached block, and that budgets hold. The fake model's next token is a function
of the whole context, so any accounting slip changes the outputs."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagedinfer.engine.block_manager import BlockManager
from pagedinfer.engine.params import SamplingParams
from pagedinfer.engine.scheduler import Scheduler
from pagedinfer.engine.sequence import Sequence

VOCAB, EOS = 7, 6


def next_token(context) -> int:
    return hash(tuple(context)) % VOCAB


def expected_output(prompt, max_tokens, ignore_eos):
    ctx, out = list(prompt), []
    while len(out) < max_tokens:
        t = next_token(ctx)
        ctx.append(t)
        out.append(t)
        if t == EOS and not ignore_eos:
            break
    return out


class FakeRunner:
    def __init__(self, bm: BlockManager, sched: Scheduler):
        self.bm, self.sched = bm, sched
        self.kv: dict[int, int] = {}

    def slot(self, seq, p):
        bs = self.bm.block_size
        return seq.block_table[p // bs] * bs + p % bs

    def run(self, batch):
        assert batch.total_tokens <= self.sched.max_num_batched_tokens
        assert len(self.sched.running) <= self.sched.max_num_seqs
        assert len(set(id(s) for s in batch.seqs)) == len(batch.seqs)
        out = []
        for seq, n in zip(batch.seqs, batch.num_tokens):
            c = seq.num_computed_tokens
            assert n >= 1 and c + n <= seq.num_tokens
            assert len(seq.block_table) >= self.bm.blocks_needed(c + n)
            for p in range(c):
                assert self.kv[self.slot(seq, p)] == seq.token_ids[p], (seq, p)
            for p in range(c, c + n):
                block = seq.block_table[p // self.bm.block_size]
                assert self.bm.ref_counts[block] == 1 and self.bm.block_hashes[block] is None
                self.kv[self.slot(seq, p)] = seq.token_ids[p]
            out.append(next_token(seq.token_ids) if c + n == seq.num_tokens else None)
        return out


def run_all(requests, num_blocks, block_size, max_num_seqs, budget, aborts=(), caching=True):
    bm = BlockManager(num_blocks, block_size, caching)
    sched = Scheduler(bm, max_num_seqs, budget, max_model_len=10_000, eos_token_ids=(EOS,))
    runner = FakeRunner(bm, sched)
    seqs = []
    pending = list(enumerate(requests))
    step = 0
    while pending or sched.has_unfinished():
        # Arrivals: a few requests per step, in order.
        while pending and (pending[0][1][3] <= step or not sched.has_unfinished()):
            i, (prompt, max_tokens, ignore_eos, _) = pending.pop(0)
            seq = Sequence(str(i), prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos))
            sched.add(seq)
            seqs.append(seq)
        for when, who in aborts:
            if when == step and who < len(seqs):
                sched.abort(seqs[who].request_id)
        if not sched.has_unfinished():
            step += 1
            continue
        batch = sched.schedule()
        assert batch.seqs, "a step with unfinished requests scheduled nothing"
        sched.update(batch, runner.run(batch))
        step += 1
        assert step < 5000
    assert bm.num_free_blocks == bm.num_blocks, "blocks leaked"
    return seqs, sched


requests_st = st.lists(
    st.tuples(st.lists(st.integers(0, 2), min_size=1, max_size=20),  # prompt (repetitive)
              st.integers(1, 12), st.booleans(), st.integers(0, 6)),  # max_tokens, ignore_eos, arrival
    min_size=1, max_size=8).map(lambda r: sorted(r, key=lambda x: x[3]))


@settings(max_examples=120, deadline=None)
@given(requests=requests_st, num_blocks=st.integers(8, 24), block_size=st.sampled_from([1, 2, 4]),
       max_num_seqs=st.integers(1, 5), budget=st.integers(1, 24), caching=st.booleans(),
       aborts=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 7)), max_size=2))
def test_random_workloads(requests, num_blocks, block_size, max_num_seqs, budget, caching, aborts):
    longest = max(len(p) + m for p, m, _, _ in requests)
    if -(-longest // block_size) > num_blocks:
        num_blocks = -(-longest // block_size)  # every request must fit alone
    seqs, sched = run_all(requests, num_blocks, block_size, max_num_seqs, budget, aborts, caching)
    for seq, (prompt, max_tokens, ignore_eos, _) in zip(seqs, requests):
        assert seq.is_finished and seq.block_table == []
        expected = expected_output(prompt, max_tokens, ignore_eos)
        if seq.finish_reason == "abort":
            assert seq.output_token_ids == expected[: seq.num_output_tokens]
        else:
            assert seq.output_token_ids == expected
            assert seq.finish_reason == ("stop" if expected[-1] == EOS and not ignore_eos else "length")


def test_preemption_happens_and_recomputes():
    requests = [([0, 1, 2, 0, 1, 2, 0, 1], 12, True, 0) for _ in range(4)]
    seqs, sched = run_all(requests, num_blocks=6, block_size=4, max_num_seqs=4, budget=64)
    assert sched.num_preemptions > 0
    for seq, (p, m, e, _) in zip(seqs, requests):
        assert seq.output_token_ids == expected_output(p, m, e)


def test_chunked_prefill_mixes_with_decode():
    bm = BlockManager(64, 4)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=8, max_model_len=1000)
    runner = FakeRunner(bm, sched)
    a = Sequence("a", [1, 2], SamplingParams(max_tokens=50, ignore_eos=True))
    sched.add(a)
    sched.update(b := sched.schedule(), runner.run(b))  # a's prefill; a now decodes
    long = Sequence("b", list(range(30)), SamplingParams(max_tokens=2))
    sched.add(long)
    batch = sched.schedule()
    assert batch.seqs == [a, long] and batch.num_tokens == [1, 7]
    sched.update(batch, runner.run(batch))
    assert long.num_computed_tokens == 7 and long.num_output_tokens == 0


def test_requests_that_can_never_fit_are_refused():
    bm = BlockManager(4, 4)
    sched = Scheduler(bm, max_model_len=64)
    with pytest.raises(ValueError, match="KV blocks"):
        sched.add(Sequence("big", list(range(10)), SamplingParams(max_tokens=10)))
    with pytest.raises(ValueError, match="empty"):
        sched.add(Sequence("e", [], SamplingParams()))
    with pytest.raises(ValueError, match="limit"):
        sched.add(Sequence("long", list(range(64)), SamplingParams()))
    assert not sched.has_unfinished()


def test_bad_scheduler_arguments():
    with pytest.raises(ValueError, match="max_num_seqs"):
        Scheduler(BlockManager(4, 4), max_num_seqs=0)

"""BlockManager alone: reference counts, prefix caching (hash chain, LRU eviction), rollback,
and a hypothesis state machine that checks the pool's invariants after every operation."""
from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pagedinfer.engine.block_manager import BlockManager
from pagedinfer.engine.params import SamplingParams
from pagedinfer.engine.sequence import Sequence


def make_seq(tokens, rid="r"):
    return Sequence(rid, list(tokens), SamplingParams())


def prefill(bm: BlockManager, seq: Sequence) -> int:
    """Allocates seq's whole prompt (sharing cached blocks), marks it computed, commits."""
    prefix = bm.lookup_prefix(seq)
    hit = len(prefix[0]) * bm.block_size
    assert bm.can_allocate(seq, seq.num_tokens, prefix[0])
    bm.allocate(seq, seq.num_tokens, prefix)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)
    return hit


def test_allocate_free_round_trip():
    bm = BlockManager(num_blocks=7, block_size=4)
    seq = make_seq(range(10))
    assert bm.can_allocate(seq, 10)
    bm.allocate(seq, 10)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 4
    assert not bm.can_allocate(seq, 4 * 7 + 1)
    bm.allocate(seq, 28)
    assert bm.num_free_blocks == 0 and bm.usage == 1.0
    with pytest.raises(RuntimeError, match="out of blocks"):
        bm.allocate(seq, 29)
    bm.free_seq(seq)
    assert bm.num_free_blocks == 7 and seq.block_table == []


def test_prefix_sharing_and_hit_counters():
    bm = BlockManager(num_blocks=16, block_size=4)
    system = list(range(100, 112))  # three full blocks
    a = make_seq(system + [1, 2], "a")
    assert prefill(bm, a) == 0
    b = make_seq(system + [7, 8, 9], "b")
    assert prefill(bm, b) == 12
    assert a.block_table[:3] == b.block_table[:3]
    assert all(bm.ref_counts[x] == 2 for x in a.block_table[:3])
    assert bm.prefix_hit_tokens == 12 and bm.prefix_query_tokens == 14 + 15
    # A prompt that is entirely cached still computes its last token: its last block is new.
    c = make_seq(system, "c")
    assert prefill(bm, c) == 8
    for s in (a, b, c):
        bm.free_seq(s)
    assert bm.num_free_blocks == 16
    # Freed blocks stay cached until reused.
    d = make_seq(system + [5], "d")
    assert prefill(bm, d) == 12


def test_lru_eviction_prefers_uncached_blocks():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = make_seq([1, 2, 3, 4, 5], "a")  # blocks [1,2] [3,4] cached, [5] not
    prefill(bm, a)
    bm.free_seq(a)
    b = make_seq([9], "b")
    prefill(bm, b)  # takes a never-cached block, not one of a's cached ones
    c = make_seq([1, 2, 3, 4, 6], "c")
    assert prefill(bm, c) == 4
    bm.free_seq(b)
    bm.free_seq(c)
    e = make_seq(list(range(20, 28)), "e")  # needs all 4 blocks: evicts every cached prefix
    prefill(bm, e)
    bm.free_seq(e)
    assert prefill(bm, make_seq([1, 2, 3, 4, 7], "f")) == 0


def test_hash_collision_guard():
    bm = BlockManager(num_blocks=8, block_size=2)
    a = make_seq([1, 2, 3], "a")
    prefill(bm, a)
    block = a.block_table[0]
    bm.block_tokens[block] = (9, 9)  # as if another prefix had collided on this hash
    assert prefill(bm, make_seq([1, 2, 3], "b")) == 0


def test_rollback_frees_trailing_blocks_and_unregisters_partial():
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(range(13))
    prefill(bm, seq)
    assert len(seq.block_hashes) == 3
    third = seq.block_table[2]
    bm.rollback(seq, 10)  # keeps blocks 0..2; block 2 now partial
    seq.num_computed_tokens = 10
    del seq.token_ids[10:]
    assert len(seq.block_table) == 3 and len(seq.block_hashes) == 2
    assert bm.block_hashes[third] is None and bm.num_free_blocks == 5
    bm.rollback(seq, 4)
    assert len(seq.block_table) == 1 and bm.num_free_blocks == 7
    bm.free_seq(seq)
    assert bm.num_free_blocks == 8


def test_rollback_refuses_shared_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    a, b = make_seq(range(9), "a"), make_seq(range(9), "b")
    prefill(bm, a)
    prefill(bm, b)
    with pytest.raises(RuntimeError, match="shared"):
        bm.rollback(b, 6)


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(0, 16)


class PoolMachine(RuleBasedStateMachine):
    """Random prefills (from a small alphabet, so prefixes repeat), growth, frees and rollbacks."""

    def __init__(self):
        super().__init__()
        self.bm = BlockManager(num_blocks=12, block_size=3)
        self.live: list[Sequence] = []
        self.n = 0

    @rule(tokens=st.lists(st.integers(0, 2), min_size=1, max_size=14))
    def add(self, tokens):
        seq = make_seq(tokens, f"s{self.n}")
        self.n += 1
        prefix = self.bm.lookup_prefix(seq)
        if self.bm.can_allocate(seq, seq.num_tokens, prefix[0]):
            prefill(self.bm, seq)
            self.live.append(seq)

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 100), extra=st.integers(1, 7))
    def grow(self, i, extra):
        seq = self.live[i % len(self.live)]
        if self.bm.can_allocate(seq, seq.num_tokens + extra):
            self.bm.allocate(seq, seq.num_tokens + extra)
            seq.token_ids += [1] * extra
            seq.num_computed_tokens = seq.num_tokens
            self.bm.commit(seq)

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 100))
    def free(self, i):
        self.bm.free_seq(self.live.pop(i % len(self.live)))

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 100), back=st.integers(1, 6))
    def rollback(self, i, back):
        seq = self.live[i % len(self.live)]
        keep = max(1, seq.num_tokens - back)
        shared_partial = (keep % 3 and len(seq.block_hashes) > keep // 3
                          and self.bm.ref_counts[seq.block_table[keep // 3]] > 1)
        if shared_partial:
            return
        self.bm.rollback(seq, keep)
        del seq.token_ids[keep:]
        seq.num_computed_tokens = keep

    @invariant()
    def consistent(self):
        bm = self.bm
        counts = [0] * bm.num_blocks
        for seq in self.live:
            assert len(set(seq.block_table)) == len(seq.block_table)
            assert len(seq.block_table) == bm.blocks_needed(seq.num_tokens)
            for b in seq.block_table:
                counts[b] += 1
        assert counts == bm.ref_counts
        assert set(bm.free) == {b for b in range(bm.num_blocks) if counts[b] == 0}
        for h, b in bm.cached.items():
            assert bm.block_hashes[b] == h
        # Every registered block that a live sequence holds stores that sequence's tokens.
        for seq in self.live:
            for i, b in enumerate(seq.block_table):
                if bm.block_hashes[b] is not None and i < len(seq.block_hashes):
                    assert bm.block_tokens[b] == tuple(seq.token_ids[i * 3:(i + 1) * 3])

    def teardown(self):
        for seq in self.live:
            self.bm.free_seq(seq)
        assert self.bm.num_free_blocks == self.bm.num_blocks


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)

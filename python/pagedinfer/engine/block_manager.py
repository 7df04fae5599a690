"""BlockManager: a fixed pool of KV-cache blocks, reference counted, with prefix caching. It only
allocates; the scheduler decides who gets blocks.

Prefix caching: once a block is full and its KV computed, it is registered under a hash chained
over every token before it (hash(previous block's hash, this block's tokens)), so a block's hash
names the whole prefix that produced its KV. A new sequence whose first blocks hash the same
shares them (reference count + 1) and skips their prefill. Freed blocks keep their hash and sit
in an LRU free list until reused for something else, so a prefix stays cached while memory allows.
"""
from __future__ import annotations

from collections import OrderedDict

from pagedinfer.engine.sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"BlockManager: need num_blocks >= 1 and block_size >= 1, got "
                             f"{num_blocks} and {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hashes: list[int | None] = [None] * num_blocks  # set while registered
        self.block_tokens: list[tuple | None] = [None] * num_blocks  # guards against collisions
        self.cached: dict[int, int] = {}  # prefix hash -> block
        # Blocks with no reference, least recently freed first (the first to be evicted).
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0

    # ---- queries --------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def usage(self) -> float:
        """Fraction of the pool referenced by some sequence."""
        return 1.0 - len(self.free) / self.num_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hit_tokens / self.prefix_query_tokens if self.prefix_query_tokens else 0.0

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def lookup_prefix(self, seq: Sequence) -> tuple[list[int], list[int]]:
        """The cached blocks (and their chain hashes) that cover a prefix of seq's tokens, never
        its last token (that one must be computed to give logits). Changes nothing."""
        blocks: list[int] = []
        hashes: list[int] = []
        if not self.enable_prefix_caching:
            return blocks, hashes
        bs, h = self.block_size, None
        for i in range((seq.num_tokens - 1) // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            h = hash((h, tokens))
            block = self.cached.get(h)
            if block is None or self.block_tokens[block] != tokens:
                break
            blocks.append(block)
            hashes.append(h)
        return blocks, hashes

    def can_allocate(self, seq: Sequence, num_tokens: int, prefix: list[int] = ()) -> bool:
        """Whether seq's block table can be grown to hold num_tokens tokens (after sharing the
        prefix blocks, which must come from lookup_prefix on an empty table)."""
        new = self.blocks_needed(num_tokens) - len(seq.block_table) - len(prefix)
        revived = sum(1 for b in prefix if self.ref_counts[b] == 0)  # they leave the free list
        return new <= len(self.free) - revived

    # ---- changes --------------------------------------------------------------------------------
    def allocate(self, seq: Sequence, num_tokens: int,
                 prefix: tuple[list[int], list[int]] | None = None) -> None:
        """Grows seq.block_table to hold num_tokens tokens. `prefix` (from lookup_prefix, only
        on an empty table) is shared first. Check can_allocate before; running out here is a bug."""
        if prefix is not None:
            if seq.block_table:
                raise RuntimeError(f"BlockManager.allocate: prefix given for {seq!r} which has blocks")
            blocks, hashes = prefix
            for block in blocks:
                if self.ref_counts[block] == 0:
                    del self.free[block]
                self.ref_counts[block] += 1
            seq.block_table = list(blocks)
            seq.block_hashes = list(hashes)
            self.prefix_query_tokens += seq.num_tokens
            self.prefix_hit_tokens += len(blocks) * self.block_size
        while len(seq.block_table) < self.blocks_needed(num_tokens):
            if not self.free:
                raise RuntimeError("BlockManager.allocate: out of blocks (can_allocate not checked)")
            block, _ = self.free.popitem(last=False)
            self._unregister(block)
            self.ref_counts[block] = 1
            seq.block_table.append(block)

    def commit(self, seq: Sequence) -> None:
        """Registers seq's blocks that became full of computed KV since the last call."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            h = hash((seq.block_hashes[-1] if seq.block_hashes else None, tokens))
            seq.block_hashes.append(h)
            block = seq.block_table[i]
            if h not in self.cached and self.block_hashes[block] is None:
                self.cached[h] = block
                self.block_hashes[block] = h
                self.block_tokens[block] = tokens

    def free_seq(self, seq: Sequence) -> None:
        """Drops seq's references; blocks nobody else holds go to the free list, last block first
        (a sequence's tail is the least likely to be shared again, so it is evicted first)."""
        for block in reversed(seq.block_table):
            self._release(block)
        seq.block_table = []
        seq.block_hashes = []

    def rollback(self, seq: Sequence, num_tokens: int) -> None:
        """Shrinks seq to its first num_tokens slots (speculative decoding's rejected tokens):
        trailing blocks are released; a registered block that becomes partial is unregistered
        (its tail will be overwritten), which is only allowed while seq holds it alone."""
        keep = self.blocks_needed(num_tokens)
        for block in reversed(seq.block_table[keep:]):
            self._release(block)
        del seq.block_table[keep:]
        full = num_tokens // self.block_size
        if len(seq.block_hashes) > full:
            if full < keep:  # the block holding token num_tokens - 1 is now partial
                block = seq.block_table[full]
                if self.ref_counts[block] > 1:
                    raise RuntimeError(f"BlockManager.rollback: block {block} of {seq!r} is shared")
                self._unregister(block)
            del seq.block_hashes[full:]

    # ---- internals ------------------------------------------------------------------------------
    def _release(self, block: int) -> None:
        self.ref_counts[block] -= 1
        if self.ref_counts[block] < 0:
            raise RuntimeError(f"BlockManager: block {block} freed twice")
        if self.ref_counts[block] == 0:
            if self.block_hashes[block] is None:
                self.free[block] = None
                self.free.move_to_end(block, last=False)  # nothing cached: reuse these first
            else:
                self.free[block] = None

    def _unregister(self, block: int) -> None:
        h = self.block_hashes[block]
        if h is not None:
            del self.cached[h]
            self.block_hashes[block] = None
            self.block_tokens[block] = None

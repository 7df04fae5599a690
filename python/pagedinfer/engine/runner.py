"""ModelRunner: executes one scheduled step. It owns the KV cache, builds the step's varlen
metadata once (on the host, with numpy, then one copy to the device), runs the model and samples.
Nothing inside the layers reads a value back to the host."""
from __future__ import annotations

import numpy as np
import torch

from pagedinfer.engine.sampler import Sampler
from pagedinfer.engine.scheduler import ScheduledBatch
from pagedinfer.memory import zeros_huge
from pagedinfer.models.config import ModelConfig
from pagedinfer.models.layers import AttentionMetadata


def kv_bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of one block over all layers, K and V."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * elem


class ModelRunner:
    def __init__(self, model, num_blocks: int, block_size: int, device: torch.device,
                 seed: int = 0):
        c = model.config
        self.model = model
        self.block_size = block_size
        self.device = device
        # One allocation [L, 2, num_blocks, block_size, Hkv, D]; each layer's K and V caches are
        # contiguous views of it (the layout in DESIGN.md). On the CPU, on huge pages
        # (pagedinfer.memory: attention reads the blocks scattered).
        shape = (c.num_layers, 2, num_blocks, block_size, c.num_kv_heads, c.head_dim)
        if torch.device(device).type == "cpu":
            self.kv_cache = zeros_huge(shape, model.dtype)
        else:
            self.kv_cache = torch.zeros(shape, dtype=model.dtype, device=device)
        self.kv_caches = [(self.kv_cache[i, 0], self.kv_cache[i, 1]) for i in range(c.num_layers)]
        self.sampler = Sampler(seed)

    def prepare(self, batch: ScheduledBatch):
        """input_ids int64 [T], the metadata, the batch indices of the sequences that sample and
        the row of each one's last token (int64 [S])."""
        bs = self.block_size
        starts = [s.num_computed_tokens for s in batch.seqs]
        ends = [c + n for c, n in zip(starts, batch.num_tokens)]
        input_ids = np.fromiter((t for s, c, e in zip(batch.seqs, starts, ends)
                                 for t in s.token_ids[c:e]), dtype=np.int64)
        positions = np.concatenate([np.arange(c, e) for c, e in zip(starts, ends)])
        max_blocks = max(-(-e // bs) for e in ends)
        block_tables = np.zeros((len(batch), max_blocks), dtype=np.int32)
        slot_mapping = np.empty(len(positions), dtype=np.int64)
        query_start_loc = np.zeros(len(batch) + 1, dtype=np.int32)
        np.cumsum(batch.num_tokens, out=query_start_loc[1:])
        for i, (s, c, e) in enumerate(zip(batch.seqs, starts, ends)):
            table = np.asarray(s.block_table[: -(-e // bs)], dtype=np.int32)
            block_tables[i, : len(table)] = table
            pos = positions[query_start_loc[i]: query_start_loc[i + 1]]
            slot_mapping[query_start_loc[i]: query_start_loc[i + 1]] = table[pos // bs] * bs + pos % bs
        dev = self.device
        meta = AttentionMetadata(
            positions=torch.from_numpy(positions).to(dev),
            query_start_loc=torch.from_numpy(query_start_loc).to(dev),
            seq_lens=torch.tensor(ends, dtype=torch.int32).to(dev),
            block_tables=torch.from_numpy(block_tables).to(dev),
            slot_mapping=torch.from_numpy(slot_mapping).to(dev),
        )
        sampling = [i for i, (s, e) in enumerate(zip(batch.seqs, ends)) if e == s.num_tokens]
        last = torch.from_numpy(query_start_loc[1:][sampling].astype(np.int64) - 1).to(dev)
        return torch.from_numpy(input_ids).to(dev), meta, sampling, last

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int | None]:
        """Runs one step; returns each scheduled sequence's sampled token (None: no sample)."""
        input_ids, meta, sampling, last = self.prepare(batch)
        hidden = self.model.forward(input_ids, meta, self.kv_caches)
        tokens: list[int | None] = [None] * len(batch)
        if sampling:
            logits = self.model.compute_logits(hidden[last])
            seqs = [batch.seqs[i] for i in sampling]
            sampled = self.sampler(logits, [s.params for s in seqs], [s.generator for s in seqs])
            for i, t in zip(sampling, sampled):
                tokens[i] = t
        return tokens

    @torch.inference_mode()
    def logits_all(self, batch: ScheduledBatch) -> torch.Tensor:
        """float32 logits [T, vocab] of every computed token (for tests: teacher forcing)."""
        input_ids, meta, _, _ = self.prepare(batch)
        return self.model.compute_logits(self.model.forward(input_ids, meta, self.kv_caches)).float()


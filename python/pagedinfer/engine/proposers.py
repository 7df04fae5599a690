"""Proposers: who drafts the tokens that the target verifies (see speculative.py).

One small interface:
    propose(seqs, num_tokens, generators) -> (drafts, draft_probs)
        drafts[i]: at most num_tokens[i] tokens continuing seqs[i].token_ids (may be fewer, or
        none); draft_probs[i]: float [len(drafts[i]), V], the filtered distributions they were
        drawn from, or None for a point mass (deterministic proposals, and every greedy request).
    verified(seq, num_valid_tokens): after verification only the first num_valid_tokens of
        seq.token_ids are what the proposer saw (the rest were rejected drafts).
    release(keep): forget every sequence not in `keep` (finished or preempted ones).
    num_blocks_used: KV blocks held (0 for model-free proposers), for leak checks.

NgramProposer: prompt lookup, no model. DraftModelProposer: a second model (any model with the
target's vocabulary, or the target's own weights quantized to INT4) with its own paged KV cache
and BlockManager; each sequence has a shadow Sequence there, computed lazily (its whole context
the first time, then the few tokens that arrived since the last round).
"""
from __future__ import annotations

import numpy as np
import torch

from pagedinfer.engine.block_manager import BlockManager
from pagedinfer.engine.runner import ModelRunner
from pagedinfer.engine.sampler import Sampler, greedy_tokens
from pagedinfer.engine.scheduler import ScheduledBatch
from pagedinfer.engine.sequence import Sequence


class NgramProposer:
    """Prompt lookup decoding: find the most recent earlier occurrence of the context's last
    n tokens (n = max_n down to min_n) and propose the tokens that followed it."""

    num_blocks_used = 0

    def __init__(self, min_n: int = 2, max_n: int = 4):
        self.min_n, self.max_n = min_n, max_n

    def propose(self, seqs, num_tokens, generators):
        return [self.lookup(s.token_ids, k) for s, k in zip(seqs, num_tokens)], [None] * len(seqs)

    def lookup(self, tokens: list[int], k: int) -> list[int]:
        ids = np.asarray(tokens, dtype=np.int64)
        length = len(ids)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            # windows[j] = ids[j : j + n] for j < length - n (starts before the suffix itself)
            windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], n)
            hits = np.flatnonzero((windows == ids[length - n:]).all(axis=1))
            if len(hits):
                start = int(hits[-1]) + n
                return ids[start: start + k].tolist()
        return []

    def verified(self, seq: Sequence, num_valid_tokens: int) -> None:
        pass

    def release(self, keep) -> None:
        pass


class DraftModelProposer:
    """Drafts with a second LlamaModel (same vocabulary as the target). Its KV pool has
    num_blocks blocks of block_size tokens, allocated without prefix caching; a sequence whose
    draft blocks cannot be found is simply not drafted this round."""

    def __init__(self, model, num_blocks: int, block_size: int, device: torch.device):
        self.model = model
        self.runner = ModelRunner(model, num_blocks, block_size, device)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching=False)
        self.shadows: dict[int, tuple[Sequence, Sequence]] = {}  # id(seq) -> (seq, shadow)

    @property
    def num_blocks_used(self) -> int:
        return self.block_manager.num_blocks - self.block_manager.num_free_blocks

    def _shadow(self, seq: Sequence) -> Sequence:
        entry = self.shadows.get(id(seq))
        if entry is None or entry[0] is not seq:
            entry = (seq, Sequence(seq.request_id, [], seq.params))
            self.shadows[id(seq)] = entry
        return entry[1]

    @torch.inference_mode()
    def propose(self, seqs, num_tokens, generators):
        bm = self.block_manager
        active, want, gens = [], [], {}
        for seq, k, gen in zip(seqs, num_tokens, generators):
            shadow = self._shadow(seq)
            gens[id(shadow)] = gen
            shadow.token_ids = list(seq.token_ids)
            # k forwards compute KV up to position num_tokens - 1 + k - 1 (the last draft's KV
            # is never needed: it is fed at the next round if accepted).
            if bm.can_allocate(shadow, seq.num_tokens + k - 1):
                bm.allocate(shadow, seq.num_tokens + k - 1)
                active.append(shadow)
                want.append(k)
        drafts = {id(s): [] for s in active}
        probs: dict[int, list[torch.Tensor]] = {id(s): [] for s in active}
        step = 0
        while active:
            batch = ScheduledBatch(list(active),
                                   [s.num_tokens - s.num_computed_tokens for s in active])
            input_ids, meta, _, last = self.runner.prepare(batch)
            hidden = self.model.forward(input_ids, meta, self.runner.kv_caches)
            logits = self.model.compute_logits(hidden[last])
            greedy_ids = greedy_tokens(logits)
            step += 1
            still, still_want = [], []
            for row, (shadow, k) in enumerate(zip(active, want)):
                shadow.num_computed_tokens = shadow.num_tokens
                if shadow.params.greedy:
                    token = greedy_ids[row]
                else:
                    q = Sampler.probs(logits[row].cpu(), shadow.params)
                    race = torch.empty_like(q).exponential_(generator=gens[id(shadow)])
                    token = int((q / race).argmax())
                    probs[id(shadow)].append(q)
                drafts[id(shadow)].append(token)
                shadow.token_ids.append(token)
                if step < k:
                    still.append(shadow)
                    still_want.append(k)
            active, want = still, still_want
        out_drafts, out_probs = [], []
        for seq in seqs:
            sid = id(self._shadow(seq))
            out_drafts.append(drafts.get(sid, []))
            q = probs.get(sid)
            out_probs.append(torch.stack(q) if q else None)
        return out_drafts, out_probs

    def verified(self, seq: Sequence, num_valid_tokens: int) -> None:
        entry = self.shadows.get(id(seq))
        if entry is None or entry[0] is not seq:
            return
        shadow = entry[1]
        shadow.num_computed_tokens = min(shadow.num_computed_tokens, num_valid_tokens)
        del shadow.token_ids[num_valid_tokens:]
        self.block_manager.rollback(shadow, shadow.num_computed_tokens)

    def release(self, keep) -> None:
        # An entry holds its Sequence, so ids of stored entries are unique among live objects.
        keep_ids = {id(s) for s in keep}
        for key in [k for k in self.shadows if k not in keep_ids]:
            self.block_manager.free_seq(self.shadows.pop(key)[1])


def int4_self_model(target, dtype: torch.dtype | None = None, group_size: int = 32):
    """The target's own float weights quantized: every layer's Linear to INT4 (round-to-nearest,
    asymmetric, per group of group_size along K), the LM head to INT8 (the same group size; it
    is the one matrix whose error moves every logit, and an INT4 head loses ~1/3 of the
    acceptances on the default model). dtype: the draft's activation and KV dtype (its cache is
    its own), default the target's; the embedding and norms are shared with the target when the
    dtypes agree (converted otherwise), the RoPE tables always."""
    import copy

    from pagedinfer.models.layers import Linear
    from pagedinfer.quant import Int4Weight, Int8Weight

    dtype = dtype or target.dtype

    def q(lin: Linear, cls=Int4Weight) -> Linear:
        if not isinstance(lin.weight, torch.Tensor):
            raise ValueError("speculative: method 'int4-self' needs a target with float weights "
                             "(got a quantized one); load it with quantization='float' (a GGUF "
                             "file is then dequantized to the activation dtype)")
        bias = None if lin.bias is None else lin.bias.to(dtype)
        return Linear(cls.quantize(lin.weight.float(), group_size), bias)

    draft = copy.copy(target)
    draft.dtype = dtype
    draft.embed, draft.norm = target.embed.to(dtype), target.norm.to(dtype)
    draft.lm_head = q(target.lm_head, Int8Weight)
    draft.layers = []
    for layer in target.layers:
        new = copy.copy(layer)
        new.attn_norm, new.ffn_norm = layer.attn_norm.to(dtype), layer.ffn_norm.to(dtype)
        new.qkv, new.o = q(layer.qkv), q(layer.o)
        new.gate_up, new.down = q(layer.gate_up), q(layer.down)
        draft.layers.append(new)
    return draft

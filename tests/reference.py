"""Pure-PyTorch references for every pagedinfer op. Slow and obvious on purpose: the kernels are
tested against these, never the other way round."""
from __future__ import annotations

import torch


# ---- KV cache ---------------------------------------------------------------------------------

def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping) -> None:
    """key/value [T, Hkv, D] -> caches [num_blocks, block_size, Hkv, D] at slot_mapping (-1 skips)."""
    block_size = key_cache.shape[1]
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        block, offset = divmod(slot, block_size)
        key_cache[block, offset] = key[t]
        value_cache[block, offset] = value[t]


def copy_blocks(key_caches, value_caches, block_mapping) -> None:
    for src, dst in block_mapping.tolist():
        for cache in (*key_caches, *value_caches):
            cache[dst] = cache[src].clone()


def swap_blocks(src, dst, block_mapping) -> None:
    for s, d in block_mapping.tolist():
        dst[d] = src[s].to(dst.device)

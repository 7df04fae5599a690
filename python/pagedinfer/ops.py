"""Python entry points for torch.ops.pagedinfer.*, with the fake (meta) implementations that let
torch.compile trace through them.

Layouts (see DESIGN.md): a KV cache is a pair key_cache / value_cache of
[num_blocks, block_size, num_kv_heads, head_dim], contiguous, fp32 / bf16 / fp16; slot
`block_id * block_size + offset` addresses one token's row; slot -1 means "do not store".
"""
from __future__ import annotations

from typing import Sequence

import torch

_ops = torch.ops.pagedinfer


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Writes each token's K and V ([T, Hkv, D]) into its slot of the caches.

    slot_mapping: int64 [T], `block_id * block_size + offset`, or -1 to skip the token.
    key/value may be strided views (e.g. slices of a fused QKV output); the last dim must be
    contiguous or it is copied first.
    """
    _ops.reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)


def copy_blocks(
    key_caches: Sequence[torch.Tensor],
    value_caches: Sequence[torch.Tensor],
    block_mapping: torch.Tensor,
) -> None:
    """Copies whole blocks src -> dst in every layer's caches (copy-on-write of shared blocks).

    block_mapping: int64 [P, 2] of (src_block, dst_block), on the CPU or the caches' device.
    """
    _ops.copy_blocks(list(key_caches), list(value_caches), block_mapping)


def swap_blocks(src: torch.Tensor, dst: torch.Tensor, block_mapping: torch.Tensor) -> None:
    """Copies blocks from one cache to another, possibly on another device (GPU <-> CPU offload).

    src: [num_src_blocks, ...], dst: [num_dst_blocks, ...] with the same block shape and dtype;
    block_mapping: int64 [P, 2] of (src_block, dst_block) on the CPU. On a GPU the copies are
    asynchronous on the current stream (use pinned CPU memory for real overlap).
    """
    _ops.swap_blocks(src, dst, block_mapping)


# Fake implementations: these ops only mutate their arguments, so there is nothing to allocate.
@torch.library.register_fake("pagedinfer::reshape_and_cache")
def _(key, value, key_cache, value_cache, slot_mapping):
    return None


@torch.library.register_fake("pagedinfer::copy_blocks")
def _(key_caches, value_caches, block_mapping):
    return None


@torch.library.register_fake("pagedinfer::swap_blocks")
def _(src, dst, block_mapping):
    return None

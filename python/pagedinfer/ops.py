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


# ---- weight-only INT4 / INT8 GEMM -------------------------------------------------------------
# The torch ops take the packed tensors (layouts: pagedinfer/quant.py and
# csrc/kernels/cpu/gemm_kernels.h); these wrappers take the weight objects.

def int4_linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight.dequantize().T + bias for x [..., K] (fp32 / bf16 / fp16) and a
    pagedinfer.quant.Int4Weight of shape (N, K); y is [..., N] in x's dtype."""
    b = weight._buffers  # direct dict access: nn.Module.__getattr__ costs ~1 us per buffer
    return _ops.int4_linear(x, b["qweight"], b["scale"], b["min"], weight.group_size, bias)


def int8_linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight.dequantize().T + bias for x [..., K] and a pagedinfer.quant.Int8Weight."""
    b = weight._buffers
    return _ops.int8_linear(x, b["qweight"], b["scale"], weight.group_size, bias)


def _linear_fake(x, n, k, group_size):
    torch._check(group_size in (32, 64, 128), lambda: f"group_size must be 32, 64 or 128, got {group_size}")
    torch._check(x.dim() >= 1 and x.shape[-1] == k, lambda: f"x.size(-1) must be K={k}, got {x.shape}")
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("pagedinfer::int4_linear")
def _(x, qweight, scale, min, group_size, bias=None):
    return _linear_fake(x, qweight.shape[0], scale.shape[1] * group_size, group_size)


@torch.library.register_fake("pagedinfer::int8_linear")
def _(x, qweight, scale, group_size, bias=None):
    return _linear_fake(x, qweight.shape[0], scale.shape[1] * group_size, group_size)

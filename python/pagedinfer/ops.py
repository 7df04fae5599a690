"""Python entry points for torch.ops.pagedinfer.*, with the fake (meta) implementations that let
torch.compile trace through them.

Layouts (see DESIGN.md): a KV cache is a pair key_cache / value_cache of
[num_blocks, block_size, num_kv_heads, head_dim], contiguous, fp32 / bf16 / fp16; slot
`block_id * block_size + offset` addresses one token's row; slot -1 means "do not store".
"""
from __future__ import annotations

import math
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


# ---- paged attention ------------------------------------------------------------------------------

def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of a flattened batch of queries over the paged KV cache.

    query [T, Hq, D]; key_cache / value_cache [num_blocks, block_size, Hkv, D] (same dtype as
    query: fp32, bf16 or fp16); query_start_loc int32 [B + 1] (0, cumulative query counts, T);
    seq_lens int32 [B] (context length including this step's queries); block_tables int32
    [B, max_blocks]. The q_len queries of sequence i sit at positions seq_lens[i] - q_len ...
    seq_lens[i] - 1 and each attends to the keys at positions 0 ... its own (or, with
    sliding_window W > 0, the last W of them). Decode, prefill, chunked prefill, prefix-cache hits
    and speculative verification are all this one call; q_len 0 is allowed. Query head h reads KV
    head h // (Hq // Hkv). scale defaults to 1 / sqrt(D). Returns out [T, Hq, D] (allocated when
    None), in the query's dtype. Full semantics: csrc/kernels/cpu/attention_kernels.h.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    if out is None:
        out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    window = 0 if sliding_window is None or sliding_window <= 0 else int(sliding_window)
    _ops.paged_attention(query, key_cache, value_cache, query_start_loc, seq_lens, block_tables,
                         float(scale), window, out)
    return out


@torch.library.register_fake("pagedinfer::paged_attention")
def _(query, key_cache, value_cache, query_start_loc, seq_lens, block_tables, scale,
      sliding_window, out):
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


# ---- fused per-layer ops (CPU) ----------------------------------------------------------------
# Rows may be strided views (slices of a fused GEMM output); the last dim must be contiguous.

def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> None:
    """In place: residual += x; x = residual / sqrt(mean(residual^2) + eps) * weight.
    x, residual [R, H]; weight [H]; one dtype (fp32 / bf16 / fp16)."""
    _ops.fused_add_rms_norm(x, residual, weight, float(eps))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """out = x / sqrt(mean(x^2) + eps) * weight, for x [R, H]; returns out."""
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _ops.rms_norm(out, x, weight, float(eps))
    return out


def silu_and_mul(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """SwiGLU's gate: x [R, 2d] -> silu(x[:, :d]) * x[:, d:], [R, d]."""
    if out is None:
        out = torch.empty((x.shape[0], x.shape[1] // 2), dtype=x.dtype, device=x.device)
    _ops.silu_and_mul(out, x)
    return out


def rotary_embedding(positions: torch.Tensor, qk: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> None:
    """In place on qk [T, H, D]: half-split RoPE, qk = qk * cos[pos] + roll(qk, D/2) * sin[pos],
    with cos / sin fp32 [max_positions, D] tables (sin's first half negated)."""
    _ops.rotary_embedding(positions, qk, cos, sin)


def argmax(x: torch.Tensor) -> torch.Tensor:
    """Index of each row's first maximum, int64 [R], for x [R, n] (fp32 / bf16 / fp16, CPU); a NaN
    counts as the maximum, as in torch.max(dim). For greedy sampling: PyTorch's CPU argmax takes
    ~5 ms and max(dim) ~1.1 ms for 64 x 49,152 bf16 logits."""
    return _ops.argmax(x)


@torch.library.register_fake("pagedinfer::argmax")
def _(x):
    torch._check(x.dim() == 2, lambda: f"argmax: x must have 2 dims [rows, n], got {x.dim()}")
    return x.new_empty((x.shape[0],), dtype=torch.int64)


@torch.library.register_fake("pagedinfer::fused_add_rms_norm")
def _(x, residual, weight, eps):
    return None


@torch.library.register_fake("pagedinfer::rms_norm")
def _(out, x, weight, eps):
    return None


@torch.library.register_fake("pagedinfer::silu_and_mul")
def _(out, x):
    return None


@torch.library.register_fake("pagedinfer::rotary_embedding")
def _(positions, qk, cos, sin):
    return None


# ---- the attention half of a decoder layer (CPU) -----------------------------------------------

def rope_cache_attention(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                         slot_mapping: torch.Tensor, query_start_loc: torch.Tensor,
                         seq_lens: torch.Tensor, block_tables: torch.Tensor, num_heads: int, *,
                         scale: float | None = None, sliding_window: int | None = None) -> torch.Tensor:
    """rotary_embedding + reshape_and_cache + paged_attention on a fused QKV projection's output,
    in one call: qkv [T, (num_heads + 2 Hkv) * D] holds each token's q heads, then k heads, then v
    heads (Hkv and D from key_cache). RoPE is applied to q and k in place, k and v are written to
    their slots, and the q heads attend over the cache. Returns [T, num_heads * D] in qkv's dtype.
    Same semantics and arguments as the three ops (see them); one dispatch instead of eleven."""
    if scale is None:
        scale = 1.0 / math.sqrt(key_cache.shape[-1])
    window = 0 if sliding_window is None or sliding_window <= 0 else int(sliding_window)
    return _ops.rope_cache_attention(qkv, positions, cos, sin, key_cache, value_cache, slot_mapping,
                                     query_start_loc, seq_lens, block_tables, int(num_heads),
                                     float(scale), window)


@torch.library.register_fake("pagedinfer::rope_cache_attention")
def _(qkv, positions, cos, sin, key_cache, value_cache, slot_mapping, query_start_loc, seq_lens,
      block_tables, num_heads, scale, sliding_window):
    return qkv.new_empty((qkv.shape[0], num_heads * key_cache.shape[-1]))

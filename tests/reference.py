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


# ---- paged attention ---------------------------------------------------------------------------

def paged_attention(query, key_cache, value_cache, query_start_loc, seq_lens, block_tables,
                    scale=None, sliding_window=None) -> torch.Tensor:
    """query [T, Hq, D], caches [num_blocks, block_size, Hkv, D] -> out [T, Hq, D] in query's dtype.

    Per sequence: gather its keys/values 0 .. seq_len-1 through block_tables, put its q_len
    queries at positions seq_len-q_len .. seq_len-1, mask keys after each query (and, with a
    sliding window W > 0, keys before position p-W+1), softmax in fp64.
    """
    T, Hq, D = query.shape
    block_size, Hkv = key_cache.shape[1], key_cache.shape[2]
    scale = D ** -0.5 if scale is None else scale
    out = torch.zeros(T, Hq, D, dtype=torch.float64, device=query.device)
    qsl = query_start_loc.tolist()
    for i, seq_len in enumerate(seq_lens.tolist()):
        q0, q1 = qsl[i], qsl[i + 1]
        if q1 == q0:
            continue
        pos = torch.arange(seq_len, device=query.device)
        blocks = block_tables[i].long()[pos // block_size]
        k = key_cache[blocks, pos % block_size].double()  # [S, Hkv, D]
        v = value_cache[blocks, pos % block_size].double()
        k = k.repeat_interleave(Hq // Hkv, dim=1)  # [S, Hq, D]
        v = v.repeat_interleave(Hq // Hkv, dim=1)
        q = query[q0:q1].double()  # [q_len, Hq, D]
        qpos = torch.arange(seq_len - (q1 - q0), seq_len, device=query.device)
        allowed = pos[None, :] <= qpos[:, None]
        if sliding_window is not None and sliding_window > 0:
            allowed &= pos[None, :] > qpos[:, None] - sliding_window
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        scores = scores.masked_fill(~allowed[None], float("-inf"))
        out[q0:q1] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
    return out.to(query.dtype)


# ---- fused per-layer ops ----------------------------------------------------------------------

def fused_add_rms_norm(x, residual, weight, eps) -> None:
    """residual += x (rounded to its dtype); x = normalized residual * weight, computed in fp32."""
    residual.copy_((residual.float() + x.float()).to(residual.dtype))
    r = residual.float()
    x.copy_((r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype))


def rms_norm(x, weight, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def silu_and_mul(x):
    d = x.shape[-1] // 2
    return (torch.nn.functional.silu(x[:, :d].float()) * x[:, d:].float()).to(x.dtype)


def rotary_embedding(positions, qk, cos, sin) -> None:
    """Half-split RoPE in place: qk = qk * cos[p] + roll(qk, D/2) * sin[p] (sin[:D/2] = -sin)."""
    x = qk.float()
    c, s = cos[positions][:, None, :], sin[positions][:, None, :]
    qk.copy_((x * c + torch.roll(x, x.shape[-1] // 2, -1) * s).to(qk.dtype))


def argmax(x):
    """Index of each row's first maximum; NaN counts as the maximum (torch.max's rule)."""
    return x.float().max(dim=-1).indices


# ---- weight-only INT4 / INT8 GEMM -------------------------------------------------------------
# Unpacks the layouts of pagedinfer/quant.py independently of the package's own helpers.

def unpack_int4(qweight: torch.Tensor, k: int) -> torch.Tensor:
    """qweight uint8 [N, ceil(K/64)*32] -> q [N, K]: byte j of 64-chunk c holds k = 64c + j
    (low nibble) and k = 64c + 32 + j (high nibble)."""
    n = qweight.shape[0]
    q = torch.zeros(n, qweight.shape[1] * 2, dtype=torch.int64)
    for c in range(qweight.shape[1] // 32):
        block = qweight[:, 32 * c:32 * (c + 1)].to(torch.int64)
        q[:, 64 * c:64 * c + 32] = block & 0xF
        q[:, 64 * c + 32:64 * c + 64] = block >> 4
    return q[:, :k]


def dequantize_int4(qweight, scale, min, group_size) -> torch.Tensor:
    k = scale.shape[1] * group_size
    q = unpack_int4(qweight, k).float()
    return q * scale.float().repeat_interleave(group_size, 1) + min.float().repeat_interleave(group_size, 1)


def dequantize_int8(qweight, scale, group_size) -> torch.Tensor:
    return qweight.float() * scale.float().repeat_interleave(group_size, 1)


def int4_linear(x, qweight, scale, min, group_size, bias=None) -> torch.Tensor:
    y = x.float() @ dequantize_int4(qweight, scale, min, group_size).T
    return (y if bias is None else y + bias.float()).to(x.dtype)


def int8_linear(x, qweight, scale, group_size, bias=None) -> torch.Tensor:
    y = x.float() @ dequantize_int8(qweight, scale, group_size).T
    return (y if bias is None else y + bias.float()).to(x.dtype)

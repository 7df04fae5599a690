"""Building blocks of the models: linear layers over float or quantized weights, RoPE tables,
and the attention metadata that every layer receives.

These are plain classes, not nn.Modules: at batch 1 a decode step is ~10 ops x 30 layers, and
module hooks and parameter bookkeeping would be pure overhead. The small per-layer ops (norms,
SwiGLU, RoPE) go through pagedinfer's fused CPU kernels, with a PyTorch fallback elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import pagedinfer.ops as ops


@dataclass
class AttentionMetadata:
    """One step's varlen layout, built once by the runner and passed to every layer (DESIGN.md).

    positions        int64 [T]   position of each token in its sequence
    query_start_loc  int32 [B+1] cumulative query lengths (sequence i's tokens are
                                 query_start_loc[i] .. query_start_loc[i+1]-1)
    seq_lens         int32 [B]   context length of each sequence including this step's tokens
    block_tables     int32 [B, max_blocks] KV blocks of each sequence (unused entries 0)
    slot_mapping     int64 [T]   cache slot of each token: block_id * block_size + offset
    """

    positions: torch.Tensor
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    slot_mapping: torch.Tensor


class Linear:
    """y = x @ W^T (+ bias). W is [N, K]: a float tensor in the activation dtype, or a
    pagedinfer.quant Int4Weight / Int8Weight (kept quantized; the kernel dequantizes on the fly)."""

    def __init__(self, weight, bias: torch.Tensor | None = None):
        self.weight = weight
        self.bias = bias
        if isinstance(weight, torch.Tensor):
            self._fn = F.linear
        else:
            from pagedinfer.quant import Int4Weight, Int8Weight

            if isinstance(weight, Int4Weight):
                self._fn = ops.int4_linear
            elif isinstance(weight, Int8Weight):
                self._fn = ops.int8_linear
            else:
                raise TypeError(f"Linear: unsupported weight type {type(weight).__name__}")

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x, self.weight, self.bias)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None,
                  freq_factors: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse frequencies [head_dim/2], float64, with Llama-3 or linear scaling applied.
    freq_factors: GGUF's rope_freqs tensor (llama.cpp's form of Llama-3 scaling): divides."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if freq_factors is not None:
        return inv / freq_factors.to(torch.float64)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type"))
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        medium = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        return torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    if kind not in (None, "default"):
        raise ValueError(f"unsupported rope scaling {scaling!r} (supported: llama3, linear)")
    return inv


def rope_tables(inv_freq: torch.Tensor, max_positions: int):
    """cos and signed sin, fp32 [max_positions, head_dim], for the half-split ("NeoX") layout:
    rotate(x) = x * cos + roll(x, D/2) * sin_signed, with sin_signed = [-sin, sin]."""
    angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    return (torch.cat([cos, cos], -1).float().contiguous(),
            torch.cat([-sin, sin], -1).float().contiguous())


# The fused ops are CPU kernels; on other devices these helpers fall back to plain PyTorch.
def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """(normalized residual + x, residual + x). On the CPU both are computed in place: x and
    residual must be tensors this layer owns (fresh GEMM outputs)."""
    if x.is_cpu:
        ops.fused_add_rms_norm(x, residual, weight, eps)
        return x, residual
    residual = residual + x
    return F.rms_norm(residual, (x.shape[-1],), weight, eps), residual


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.is_cpu:
        return ops.rms_norm(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU on the fused gate/up output [T, 2d] -> [T, d]."""
    if x.is_cpu:
        return ops.silu_and_mul(x)
    d = x.shape[-1] // 2
    return F.silu(x[:, :d]) * x[:, d:]


def rotary_embedding(positions: torch.Tensor, qk: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> torch.Tensor:
    """Half-split RoPE on qk [T, H, D] (in place on the CPU); cos / sin fp32 [max_pos, D]."""
    if qk.is_cpu:
        ops.rotary_embedding(positions, qk, cos, sin)
        return qk
    c, s = cos[positions].unsqueeze(1).to(qk.dtype), sin[positions].unsqueeze(1).to(qk.dtype)
    return torch.addcmul(qk * c, torch.roll(qk, qk.shape[-1] // 2, -1), s)

"""INT4 / INT8 weight-only formats: round-to-nearest quantizer, exact GGUF / GPTQ / AWQ import.

Int4Weight, w[n, k] = q * scale[n, g] + min[n, g], q in 0..15, g = k // group_size:
  qweight uint8 [N, ceil(K / 64) * 32]  K is cut into chunks of 64; chunk c of row n is 32 bytes,
                                          byte j = q[64c + j] | q[64c + 32 + j] << 4 (zero-padded
                                          past K). This is the one place the nibble order is
                                          stated; csrc/kernels/cpu/gemm_kernels.h mirrors it.
  scale, min  fp16 [N, K / G]           fp16 holds GGUF's d and m exactly.
Int8Weight, w[n, k] = q * scale[n, g]:
  qweight int8 [N, K], scale fp16 [N, K / G]  (GGUF Q8_0: G = 32, exact).

Both are nn.Modules whose buffers are the packed tensors, so `.to(device)` and state_dict
save/load work; `dequantize()` returns exactly the matrix the kernels multiply by (computed in
fp32: q * scale is exact in fp32, then + min rounds once, as gguf's own dequantization does).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

GROUP_SIZES = (32, 64, 128)
INT8_GROUP_SIZES = (32, 64, 128)
_CHUNK = 64  # K elements per 32 packed bytes

# ggml type ids (gguf.GGMLQuantizationType) and their block sizes in bytes (32 weights each).
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0, GGML_BF16 = 0, 1, 2, 3, 8, 30
_GGML_BLOCK_BYTES = {GGML_Q4_0: 18, GGML_Q4_1: 20, GGML_Q8_0: 34}


def _check_group(group_size: int, allowed, who: str) -> None:
    if group_size not in allowed:
        raise ValueError(f"{who}: group_size must be one of {allowed}, got {group_size}")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q uint8 [N, K] in 0..15 -> qweight uint8 [N, ceil(K/64)*32] (layout in the module doc)."""
    n, k = q.shape
    kp = -(-k // _CHUNK) * _CHUNK
    padded = torch.zeros(n, kp, dtype=torch.uint8, device=q.device)
    padded[:, :k] = q.to(torch.uint8)
    chunks = padded.view(n, kp // _CHUNK, 2, 32)
    return (chunks[:, :, 0] | (chunks[:, :, 1] << 4)).reshape(n, kp // 2).contiguous()


def unpack_int4(qweight: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of pack_int4: uint8 [N, K] in 0..15."""
    n = qweight.shape[0]
    b = qweight.view(n, -1, 32)
    q = torch.stack([b & 0x0F, b >> 4], dim=2).reshape(n, -1)
    return q[:, :k]


class _PackedWeight(nn.Module):
    """Keeps the packed buffers' dtypes under module.to(dtype) / .half() / .bfloat16(): a model
    cast to bf16 must not round the fp16 scales. Device moves apply as usual."""

    def _apply(self, fn, recurse=True):
        for name, buf in self._buffers.items():
            if buf is None:
                continue
            moved = fn(buf)
            if moved.dtype != buf.dtype:
                moved = buf.to(moved.device)
            self._buffers[name] = moved
        return self


class Int4Weight(_PackedWeight):
    """Packed INT4 weight of an [N, K] matrix with per-group scale and min (see module doc)."""

    def __init__(self, n: int, k: int, group_size: int = 32, device=None):
        super().__init__()
        _check_group(group_size, GROUP_SIZES, "Int4Weight")
        if k % group_size != 0:
            raise ValueError(f"Int4Weight: K (in_features) must be divisible by group_size "
                             f"{group_size}, got K={k}")
        self.shape = (int(n), int(k))
        self.group_size = int(group_size)
        kp = -(-k // _CHUNK) * _CHUNK
        self.register_buffer("qweight", torch.zeros(n, kp // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scale", torch.zeros(n, k // group_size, dtype=torch.float16, device=device))
        self.register_buffer("min", torch.zeros(n, k // group_size, dtype=torch.float16, device=device))

    def extra_repr(self) -> str:
        return f"N={self.shape[0]}, K={self.shape[1]}, group_size={self.group_size}"

    @classmethod
    def from_parts(cls, q: torch.Tensor, scale: torch.Tensor, min: torch.Tensor, group_size: int):
        """q uint8/int [N, K] in 0..15, scale/min [N, K/G] (rounded to fp16)."""
        n, k = q.shape
        if int(q.min()) < 0 or int(q.max()) > 15:
            raise ValueError(f"Int4Weight: q must lie in 0..15, got range [{int(q.min())}, {int(q.max())}]")
        w = cls(n, k, group_size, device=q.device)
        if tuple(scale.shape) != (n, k // group_size) or tuple(min.shape) != (n, k // group_size):
            raise ValueError(f"Int4Weight: scale and min must be [{n}, {k // group_size}], got "
                             f"{list(scale.shape)} and {list(min.shape)}")
        w.qweight.copy_(pack_int4(q))
        w.scale.copy_(scale.to(torch.float16))
        w.min.copy_(min.to(torch.float16))
        return w

    def unpacked(self) -> torch.Tensor:
        return unpack_int4(self.qweight, self.shape[1])

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        g = self.group_size
        q = self.unpacked().float().view(self.shape[0], -1, g)
        w = q * self.scale.float()[..., None] + self.min.float()[..., None]
        return w.reshape(self.shape).to(dtype)

    # ---- constructors ---------------------------------------------------------------------------
    @classmethod
    def quantize(cls, w: torch.Tensor, group_size: int = 32):
        """Round-to-nearest, asymmetric: per group min and (max - min) / 15, both rounded to fp16
        first so q is chosen against the values the kernel will use."""
        _check_group(group_size, GROUP_SIZES, "Int4Weight.quantize")
        if w.dim() != 2:
            raise ValueError(f"Int4Weight.quantize: w must be 2-D [N, K], got shape {list(w.shape)}")
        n, k = w.shape
        if k % group_size != 0:
            raise ValueError(f"Int4Weight.quantize: K (in_features) must be divisible by group_size "
                             f"{group_size}, got K={k}")
        wg = w.detach().float().reshape(n, k // group_size, group_size)
        lo, hi = wg.amin(-1), wg.amax(-1)
        mn = lo.to(torch.float16).float()
        scale = ((hi - mn) / 15).to(torch.float16).float()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round((wg - mn[..., None]) / safe[..., None]).clamp_(0, 15)
        q = torch.where(scale[..., None] > 0, q, torch.zeros_like(q))
        return cls.from_parts(q.to(torch.uint8).reshape(n, k), scale, mn, group_size)

    @classmethod
    def from_gguf(cls, data, ggml_type: int, shape):
        """GGUF Q4_0 (d; min = -8 d) or Q4_1 (d, m) blocks, exactly. data: the raw block bytes
        (GGUFReader's tensor.data, uint8 [N, K/32 * block_bytes]); shape: GGUF order [K, N]."""
        ggml_type = int(ggml_type)
        if ggml_type not in (GGML_Q4_0, GGML_Q4_1):
            raise ValueError(f"Int4Weight.from_gguf: ggml_type must be Q4_0 ({GGML_Q4_0}) or Q4_1 "
                             f"({GGML_Q4_1}), got {_ggml_name(ggml_type)}")
        k, n = _gguf_2d_shape(shape, "Int4Weight.from_gguf")
        blocks = _gguf_blocks(data, ggml_type, n, k, "Int4Weight.from_gguf")
        d = blocks[:, :, 0:2].contiguous().view(torch.float16)[..., 0]
        if ggml_type == GGML_Q4_1:
            m = blocks[:, :, 2:4].contiguous().view(torch.float16)[..., 0]
            qs = blocks[:, :, 4:]
        else:
            m8 = -8 * d.float()
            if not torch.isfinite(m8.to(torch.float16)).all():
                raise ValueError("Int4Weight.from_gguf: a Q4_0 scale d is too large for min = -8 d in fp16")
            m = m8.to(torch.float16)
            qs = blocks[:, :, 2:]
        # ggml: byte j of a block holds element j (low nibble) and element j + 16 (high nibble).
        q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).reshape(n, k)
        return cls.from_parts(q, d, m, 32)

    @classmethod
    def from_gptq(cls, qweight, qzeros, scales, g_idx=None, zero_offset: int = 1):
        """GPTQ (AutoGPTQ) layout: qweight int32 [K/8, N] (8 nibbles along K, lowest first),
        qzeros int32 [K/G, N/8] (along N), scales fp16 [K/G, N]; w = (q - (z + zero_offset)) * s
        (zero_offset 1 for the classic "gptq" format, 0 for "gptq_v2"). Act-order checkpoints
        (g_idx not k // G) are refused: the kernels need each group's K contiguous."""
        k = qweight.shape[0] * 8
        n = qweight.shape[1]
        groups = scales.shape[0]
        if groups == 0 or k % groups != 0:
            raise ValueError(f"from_gptq: scales.shape[0] ({groups}) must divide K={k}")
        g = k // groups
        _check_group(g, GROUP_SIZES, "from_gptq")
        if g_idx is not None:
            expected = torch.arange(k, device=g_idx.device) // g
            if not torch.equal(g_idx.to(torch.int64), expected):
                raise ValueError("from_gptq: act-order checkpoints (g_idx != k // group_size, i.e. "
                                 "desc_act=True) are not supported; export with desc_act=False")
        shifts = torch.arange(0, 32, 4, device=qweight.device, dtype=torch.int32)
        q = ((qweight.to(torch.int32)[:, None, :] >> shifts[None, :, None]) & 0xF).reshape(k, n).t()
        z = ((qzeros.to(torch.int32)[:, :, None] >> shifts[None, None, :]) & 0xF).reshape(groups, -1)[:, :n]
        z = (z + zero_offset).t().float()
        s = scales.t().float()
        return cls.from_parts(q.to(torch.uint8), s, -z * s.to(torch.float16).float(), g)

    @classmethod
    def from_awq(cls, qweight, qzeros, scales):
        """AutoAWQ GEMM layout: qweight int32 [K, N/8], qzeros int32 [K/G, N/8], scales fp16
        [K/G, N]; each int32 packs 8 columns in the order 0, 2, 4, 6, 1, 3, 5, 7 (nibble j holds
        column _AWQ_ORDER[j]); w = (q - z) * s."""
        k = qweight.shape[0]
        n = qweight.shape[1] * 8
        groups = scales.shape[0]
        if groups == 0 or k % groups != 0:
            raise ValueError(f"from_awq: scales.shape[0] ({groups}) must divide K={k}")
        g = k // groups
        _check_group(g, GROUP_SIZES, "from_awq")
        q = _awq_unpack(qweight).t()
        z = _awq_unpack(qzeros).t().float()
        s = scales.t().float()
        return cls.from_parts(q.to(torch.uint8), s, -z * s.to(torch.float16).float(), g)


_AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _awq_unpack(packed: torch.Tensor) -> torch.Tensor:
    rows, cols = packed.shape
    out = torch.empty(rows, cols * 8, dtype=torch.int32, device=packed.device)
    p = packed.to(torch.int32)
    for j, col in enumerate(_AWQ_ORDER):
        out[:, col::8] = (p >> (4 * j)) & 0xF
    return out


class Int8Weight(_PackedWeight):
    """INT8 weight of an [N, K] matrix: qweight int8 [N, K], scale fp16 [N, K/G], w = q * scale."""

    def __init__(self, n: int, k: int, group_size: int = 32, device=None):
        super().__init__()
        _check_group(group_size, INT8_GROUP_SIZES, "Int8Weight")
        if k % group_size != 0:
            raise ValueError(f"Int8Weight: K (in_features) must be divisible by group_size "
                             f"{group_size}, got K={k}")
        self.shape = (int(n), int(k))
        self.group_size = int(group_size)
        self.register_buffer("qweight", torch.zeros(n, k, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.zeros(n, k // group_size, dtype=torch.float16, device=device))

    def extra_repr(self) -> str:
        return f"N={self.shape[0]}, K={self.shape[1]}, group_size={self.group_size}"

    @classmethod
    def from_parts(cls, q: torch.Tensor, scale: torch.Tensor, group_size: int):
        n, k = q.shape
        w = cls(n, k, group_size, device=q.device)
        if tuple(scale.shape) != (n, k // group_size):
            raise ValueError(f"Int8Weight: scale must be [{n}, {k // group_size}], got {list(scale.shape)}")
        w.qweight.copy_(q.to(torch.int8))
        w.scale.copy_(scale.to(torch.float16))
        return w

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n, k = self.shape
        q = self.qweight.float().view(n, -1, self.group_size)
        return (q * self.scale.float()[..., None]).reshape(n, k).to(dtype)

    @classmethod
    def quantize(cls, w: torch.Tensor, group_size: int = 32):
        """Round-to-nearest, symmetric: scale = absmax / 127 (rounded to fp16 first)."""
        _check_group(group_size, INT8_GROUP_SIZES, "Int8Weight.quantize")
        if w.dim() != 2:
            raise ValueError(f"Int8Weight.quantize: w must be 2-D [N, K], got shape {list(w.shape)}")
        n, k = w.shape
        if k % group_size != 0:
            raise ValueError(f"Int8Weight.quantize: K (in_features) must be divisible by group_size "
                             f"{group_size}, got K={k}")
        wg = w.detach().float().reshape(n, k // group_size, group_size)
        scale = (wg.abs().amax(-1) / 127).to(torch.float16).float()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(wg / safe[..., None]).clamp_(-128, 127)
        return cls.from_parts(q.to(torch.int8).reshape(n, k), scale, group_size)

    @classmethod
    def from_gguf(cls, data, ggml_type: int, shape):
        """GGUF Q8_0 blocks (d fp16, 32 x int8), exactly; arguments as Int4Weight.from_gguf."""
        ggml_type = int(ggml_type)
        if ggml_type != GGML_Q8_0:
            raise ValueError(f"Int8Weight.from_gguf: ggml_type must be Q8_0 ({GGML_Q8_0}), got "
                             f"{_ggml_name(ggml_type)}")
        k, n = _gguf_2d_shape(shape, "Int8Weight.from_gguf")
        blocks = _gguf_blocks(data, ggml_type, n, k, "Int8Weight.from_gguf")
        d = blocks[:, :, 0:2].contiguous().view(torch.float16)[..., 0]
        q = blocks[:, :, 2:].contiguous().view(torch.int8).reshape(n, k)
        return cls.from_parts(q, d, 32)


def _ggml_name(t: int) -> str:
    try:
        import gguf

        return f"{gguf.GGMLQuantizationType(t).name} ({t})"
    except Exception:  # unknown id, or gguf not installed
        return str(t)


def _gguf_2d_shape(shape, who: str):
    dims = [int(s) for s in shape]
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 2:
        raise ValueError(f"{who}: shape must be 2-D GGUF order [K, N], got {dims}")
    if dims[0] % 32 != 0:
        raise ValueError(f"{who}: K (shape[0]) must be a multiple of the 32-weight block, got {dims[0]}")
    return dims[0], dims[1]


def _gguf_blocks(data, ggml_type: int, n: int, k: int, who: str) -> torch.Tensor:
    raw = torch.from_numpy(np.ascontiguousarray(np.asarray(data)).view(np.uint8).reshape(-1).copy())
    bb = _GGML_BLOCK_BYTES[ggml_type]
    expected = n * (k // 32) * bb
    if raw.numel() != expected:
        raise ValueError(f"{who}: data must hold {expected} bytes ({n} x {k // 32} blocks of {bb}), "
                         f"got {raw.numel()}")
    return raw.view(n, k // 32, bb)


def from_gguf_tensor(t):
    """A GGUFReader tensor -> Int4Weight (Q4_0/Q4_1), Int8Weight (Q8_0) or a float torch.Tensor in
    PyTorch order (F32/F16/BF16). Other types raise ValueError naming the tensor and type."""
    ggml_type = int(t.tensor_type)
    if ggml_type in (GGML_Q4_0, GGML_Q4_1):
        return Int4Weight.from_gguf(t.data, ggml_type, t.shape)
    if ggml_type == GGML_Q8_0:
        return Int8Weight.from_gguf(t.data, ggml_type, t.shape)
    shape = [int(s) for s in reversed(list(t.shape))]
    arr = np.ascontiguousarray(np.asarray(t.data))
    if ggml_type == GGML_F32:
        return torch.from_numpy(arr.view(np.float32).copy()).reshape(shape)
    if ggml_type == GGML_F16:
        return torch.from_numpy(arr.view(np.float16).copy()).reshape(shape)
    if ggml_type == GGML_BF16:
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16).reshape(shape)
    raise ValueError(f"from_gguf_tensor: tensor {getattr(t, 'name', '?')!r} has GGUF type "
                     f"{_ggml_name(ggml_type)}; supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0")

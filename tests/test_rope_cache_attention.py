"""rope_cache_attention (RoPE + cache write + paged attention on a fused QKV output, one op)
against the three ops it fuses (bit for bit: the same kernels) and against tests/reference.py
(tolerances of test_attention.py), over dtypes, GQA ratios, head sizes and mixed batches."""
from __future__ import annotations

import pytest
import torch

import pagedinfer.ops as ops
import reference as ref
from test_attention import MIXED, TOL, make_batch


def make_case(specs, Hq, Hkv, D, block_size, dtype, max_pos=512):
    """A batch of make_batch plus a fused qkv [T, (Hq + 2 Hkv) * D] for its new tokens, their
    positions and cache slots, and RoPE tables."""
    _, key_cache, value_cache, qsl, seq_lens, block_tables = make_batch(specs, Hq, Hkv, D,
                                                                        block_size, dtype)
    positions, slots = [], []
    for i, (q_len, seq_len) in enumerate(specs):
        for pos in range(seq_len - q_len, seq_len):
            positions.append(pos)
            slots.append(int(block_tables[i, pos // block_size]) * block_size + pos % block_size)
    T = len(positions)
    qkv = torch.randn(T, (Hq + 2 * Hkv) * D).to(dtype)
    angles = torch.rand(max_pos, D // 2) * 6
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([-angles.sin(), angles.sin()], -1)
    return dict(qkv=qkv, positions=torch.tensor(positions, dtype=torch.int64), cos=cos, sin=sin,
                key_cache=key_cache, value_cache=value_cache,
                slot_mapping=torch.tensor(slots, dtype=torch.int64), query_start_loc=qsl,
                seq_lens=seq_lens, block_tables=block_tables)


def clone(case):
    return {k: v.clone() for k, v in case.items()}


def three_ops(c, Hq, module, window=None):
    """The unfused sequence, with module = pagedinfer.ops or the reference."""
    T, Hkv, D = c["qkv"].shape[0], c["key_cache"].shape[2], c["key_cache"].shape[3]
    qkv3 = c["qkv"].view(T, Hq + 2 * Hkv, D)
    module.rotary_embedding(c["positions"], qkv3[:, : Hq + Hkv], c["cos"], c["sin"])
    module.reshape_and_cache(qkv3[:, Hq: Hq + Hkv], qkv3[:, Hq + Hkv:], c["key_cache"],
                             c["value_cache"], c["slot_mapping"])
    out = module.paged_attention(qkv3[:, :Hq], c["key_cache"], c["value_cache"],
                                 c["query_start_loc"], c["seq_lens"], c["block_tables"],
                                 sliding_window=window)
    return out.reshape(T, Hq * D)


def fused(c, Hq, window=None):
    return ops.rope_cache_attention(c["qkv"], c["positions"], c["cos"], c["sin"], c["key_cache"],
                                    c["value_cache"], c["slot_mapping"], c["query_start_loc"],
                                    c["seq_lens"], c["block_tables"], Hq, sliding_window=window)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("Hq,Hkv,D", [(9, 3, 64), (4, 4, 128), (6, 1, 80), (8, 2, 256)])
@pytest.mark.parametrize("window", [None, 13])
def test_matches_the_three_ops_and_the_reference(dtype, Hq, Hkv, D, window):
    case = make_case(MIXED, Hq, Hkv, D, 16, dtype)
    a, b, r = clone(case), clone(case), clone(case)
    got = fused(a, Hq, window)
    want = three_ops(b, Hq, ops, window)
    assert got.shape == (case["qkv"].shape[0], Hq * D) and got.dtype == dtype
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    for name in ("qkv", "key_cache", "value_cache"):  # RoPE in place; K, V in their slots
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0)
    expected = three_ops(r, Hq, ref, window)
    torch.testing.assert_close(got.double(), expected.double(), atol=TOL[dtype][0],
                               rtol=TOL[dtype][1])


def test_decode_batch_of_one():
    case = make_case([(1, 37)], 9, 3, 64, 16, torch.bfloat16)
    a, b = clone(case), clone(case)
    torch.testing.assert_close(fused(a, 9), three_ops(b, 9, ops), atol=0, rtol=0)


def test_bad_input():
    case = make_case([(1, 20), (3, 3)], 4, 2, 64, 16, torch.float32)
    # num_heads=2 expects (2 + 2 * 2) * 64 = 384 columns; qkv has (4 + 2 * 2) * 64 = 512
    with pytest.raises(ValueError, match=r"rope_cache_attention: qkv.size\(1\) .* must be 384, got 512"):
        fused(case, 2)
    with pytest.raises(ValueError, match="rope_cache_attention: num_heads must be positive"):
        fused(case, 0)
    bad = clone(case)
    bad["qkv"] = torch.randn(4, 512 * 2)[:, ::2]
    with pytest.raises(ValueError, match="qkv must have a contiguous last dim"):
        fused(bad, 4)
    bad = clone(case)
    bad["slot_mapping"] = bad["slot_mapping"][:2]
    with pytest.raises(ValueError, match="slot_mapping"):
        fused(bad, 4)
    bad = clone(case)
    bad["positions"] = torch.tensor([0, 1, 2, 10_000])
    with pytest.raises(IndexError, match="positions\\[3\\] = 10000 is outside the tables"):
        fused(bad, 4)
    bad = clone(case)
    bad["block_tables"] = bad["block_tables"].to(torch.int64)
    with pytest.raises(ValueError, match="block_tables"):
        fused(bad, 4)


def test_opcheck():
    c = make_case([(1, 20), (5, 5), (2, 30)], 4, 2, 64, 16, torch.float32)
    args = (c["qkv"], c["positions"], c["cos"], c["sin"], c["key_cache"], c["value_cache"],
            c["slot_mapping"], c["query_start_loc"], c["seq_lens"], c["block_tables"], 4, 0.125)
    torch.library.opcheck(torch.ops.pagedinfer.rope_cache_attention, (*args, 0))
    torch.library.opcheck(torch.ops.pagedinfer.rope_cache_attention, (*args, 8))

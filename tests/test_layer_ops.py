"""The fused per-layer ops (fused_add_rms_norm, rms_norm, silu_and_mul, rotary_embedding) and
argmax against tests/reference.py: awkward sizes, strided rows, every dtype, poisoned outputs,
bad input."""
from __future__ import annotations

import pytest
import torch

import pagedinfer
import pagedinfer.ops as ops
import reference as ref
from conftest import DTYPES, poison_

TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


@pytest.fixture(params=["best", "scalar"], autouse=True)
def isa(request):
    """Every test runs on the best ISA twin and on the scalar one."""
    pagedinfer._C.set_cpu_isa(request.param)
    yield request.param
    pagedinfer._C.set_cpu_isa("best")


def strided_rows(rows, cols, dtype, extra=5):
    """A [rows, cols] view with a row stride larger than cols (a slice of a wider tensor)."""
    return torch.randn(rows, cols + extra).to(dtype)[:, 2: 2 + cols]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, hidden", [(1, 1), (3, 19), (19, 576), (111, 64)])
@pytest.mark.parametrize("strided", [False, True])
def test_fused_add_rms_norm(dtype, rows, hidden, strided):
    x = strided_rows(rows, hidden, dtype) if strided else torch.randn(rows, hidden).to(dtype)
    residual = torch.randn(rows, hidden).to(dtype)
    weight = torch.randn(hidden).to(dtype)
    x_ref, r_ref = x.clone(), residual.clone()
    ref.fused_add_rms_norm(x_ref, r_ref, weight, 1e-5)
    ops.fused_add_rms_norm(x, residual, weight, 1e-5)
    torch.testing.assert_close(residual, r_ref, atol=0, rtol=0)
    torch.testing.assert_close(x, x_ref, atol=TOL[dtype][0], rtol=TOL[dtype][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, hidden", [(1, 3), (19, 111), (64, 576)])
def test_rms_norm(dtype, rows, hidden):
    x = strided_rows(rows, hidden, dtype)
    weight = torch.randn(hidden).to(dtype)
    out = poison_(torch.empty(rows, hidden, dtype=dtype))
    ops.rms_norm(x, weight, 1e-6, out=out)
    torch.testing.assert_close(out, ref.rms_norm(x, weight, 1e-6), atol=TOL[dtype][0], rtol=TOL[dtype][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, d", [(1, 1), (3, 19), (37, 1536)])
def test_silu_and_mul(dtype, rows, d):
    x = strided_rows(rows, 2 * d, dtype) * 4
    out = poison_(torch.empty(rows, d, dtype=dtype))
    ops.silu_and_mul(x, out=out)
    torch.testing.assert_close(out, ref.silu_and_mul(x), atol=TOL[dtype][0], rtol=TOL[dtype][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens, heads, head_dim", [(1, 1, 2), (3, 12, 64), (19, 5, 18), (2, 3, 80), (1, 9, 128)])
def test_rotary_embedding(dtype, tokens, heads, head_dim):
    max_pos = 50
    angles = torch.rand(max_pos, head_dim // 2) * 6
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([-angles.sin(), angles.sin()], -1)
    # qk: the first `heads` heads of a wider [T, heads + 3, D] buffer (a fused QKV output).
    qk = torch.randn(tokens, heads + 3, head_dim).to(dtype)[:, :heads]
    positions = torch.randint(0, max_pos, (tokens,))
    expected = qk.clone()
    ref.rotary_embedding(positions, expected, cos, sin)
    ops.rotary_embedding(positions, qk, cos, sin)
    torch.testing.assert_close(qk, expected, atol=TOL[dtype][0], rtol=TOL[dtype][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, n", [(1, 1), (3, 19), (2, 49152), (17, 111)])
def test_argmax(dtype, rows, n):
    x = torch.randn(rows, n + 7).to(dtype)[:, 3: 3 + n]  # rows at a stride wider than n
    if n > 4:  # each row's maximum twice: the first one must win
        top = x.max(dim=-1)
        x[torch.arange(rows), (top.indices + n // 2) % n] = top.values
    got = ops.argmax(x)
    assert got.dtype == torch.int64 and torch.equal(got, ref.argmax(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_infinities_and_nans(dtype):
    x = torch.zeros(6, 40)
    x[0] = float("-inf")                                        # all -inf: index 0
    x[1, 37] = x[1, 5] = 3.0                                    # a tie across lanes
    x[2, 30], x[2, 17] = float("inf"), float("nan")             # NaN beats +inf
    x[3, 33], x[3, 2] = float("nan"), float("nan")              # the first NaN
    x[4, 39] = float("inf")                                     # in the masked tail
    x[5, 20:] = -1.0                                            # max 0 in the first lanes
    x = x.to(dtype)
    assert ops.argmax(x).tolist() == ref.argmax(x).tolist() == [0, 5, 17, 2, 39, 0]


def test_argmax_bad_input():
    with pytest.raises(ValueError, match=r"argmax: x must have 2 dims"):
        ops.argmax(torch.randn(5))
    with pytest.raises(ValueError, match="argmax: x must have at least one column"):
        ops.argmax(torch.randn(3, 0))
    with pytest.raises(ValueError, match="argmax: x"):
        ops.argmax(torch.ones(2, 3, dtype=torch.int32))


def test_opcheck():
    x, residual, w = torch.randn(3, 8), torch.randn(3, 8), torch.randn(8)
    torch.library.opcheck(torch.ops.pagedinfer.fused_add_rms_norm, (x, residual, w, 1e-5))
    torch.library.opcheck(torch.ops.pagedinfer.rms_norm, (torch.empty(3, 8), x, w, 1e-5))
    torch.library.opcheck(torch.ops.pagedinfer.silu_and_mul, (torch.empty(3, 4), x))
    cos, sin = torch.randn(10, 8), torch.randn(10, 8)
    torch.library.opcheck(torch.ops.pagedinfer.rotary_embedding,
                          (torch.tensor([0, 3, 9]), torch.randn(3, 2, 8), cos, sin))
    torch.library.opcheck(torch.ops.pagedinfer.argmax, (torch.randn(4, 37),))


def test_compile():
    @torch.compile(fullgraph=True, dynamic=True)
    def block(x, residual, w):
        ops.fused_add_rms_norm(x, residual, w, 1e-5)
        return ops.silu_and_mul(x)

    x, residual, w = torch.randn(5, 16), torch.randn(5, 16), torch.randn(16)
    x_ref, r_ref = x.clone(), residual.clone()
    ref.fused_add_rms_norm(x_ref, r_ref, w, 1e-5)
    torch.testing.assert_close(block(x, residual, w), ref.silu_and_mul(x_ref))


def test_bad_input():
    x, w = torch.randn(3, 8), torch.randn(8)
    with pytest.raises(ValueError, match="weight.size\\(0\\)"):
        ops.fused_add_rms_norm(x, torch.randn(3, 8), torch.randn(7), 1e-5)
    with pytest.raises(ValueError, match="residual must have x's shape"):
        ops.fused_add_rms_norm(x, torch.randn(2, 8), w, 1e-5)
    with pytest.raises(ValueError, match="same dtype"):
        ops.rms_norm(x, w.double(), 1e-5)
    with pytest.raises(ValueError, match="even"):
        ops.silu_and_mul(torch.randn(2, 7), out=torch.empty(2, 3))
    with pytest.raises(ValueError, match="contiguous last dim"):
        ops.rms_norm(torch.randn(8, 3).t(), w, 1e-5)
    cos, sin = torch.randn(10, 8), torch.randn(10, 8)
    with pytest.raises(IndexError, match="positions\\[1\\] = 10"):
        ops.rotary_embedding(torch.tensor([0, 10]), torch.randn(2, 1, 8), cos, sin)
    with pytest.raises(ValueError, match="int64|Long"):
        ops.rotary_embedding(torch.tensor([0, 1], dtype=torch.int32), torch.randn(2, 1, 8), cos, sin)
    with pytest.raises(ValueError, match="head_dim"):
        ops.rotary_embedding(torch.tensor([0, 1]), torch.randn(2, 1, 6), cos, sin)

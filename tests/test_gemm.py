"""int4_linear / int8_linear against tests/reference.py, on every ISA twin and every strategy
(GEMV for small M, AMX tiles, dequantized W + at::mm for many rows or without AMX)."""
from __future__ import annotations

import pytest
import torch

import pagedinfer
import pagedinfer.ops as ops
from pagedinfer.quant import Int4Weight, Int8Weight
from conftest import DTYPES
import reference as ref

# |y - y_ref| <= tol * (max |y_ref| + 1): fp32 activations keep fp32-level accuracy (bf16 x is
# split hi + lo in the kernels), bf16 / fp16 are held to their own rounding.
TOL = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}

SHAPES = [  # N, K, group_size: K not a multiple of 64 or 256, odd N
    (19, 96, 32), (33, 192, 64), (7, 384, 128), (64, 544, 32), (130, 1088, 64), (37, 576, 32),
]
MS = [1, 2, 3, 4, 5, 17, 64, 300]


@pytest.fixture(params=["best", "scalar"])
def isa(request):
    pagedinfer._C.set_cpu_isa(request.param)
    yield request.param
    pagedinfer._C.set_cpu_isa("best")


def make(kind, n, k, g):
    w = torch.randn(n, k) * 0.05
    return Int4Weight.quantize(w, g) if kind == "int4" else Int8Weight.quantize(w, g)


def run(kind, x, w, bias=None):
    return (ops.int4_linear if kind == "int4" else ops.int8_linear)(x, w, bias)


def reference(kind, x, w, bias=None):
    if kind == "int4":
        return ref.int4_linear(x, w.qweight, w.scale, w.min, w.group_size, bias)
    return ref.int8_linear(x, w.qweight, w.scale, w.group_size, bias)


def check_close(y, want, dtype):
    assert y.dtype == want.dtype and y.shape == want.shape
    assert not torch.isnan(y).any()
    err = (y.float() - want.float()).abs().max().item()
    assert err <= TOL[dtype] * (want.float().abs().max().item() + 1.0), err


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,g", SHAPES)
def test_linear_matches_reference(isa, kind, dtype, n, k, g):
    w = make(kind, n, k, g)
    bias = torch.randn(n)
    for m in MS:
        if isa == "scalar" and m * n * k > 4e6:
            continue  # the scalar twin is slow; its large-M path is covered by smaller shapes
        x = torch.randn(m, k).to(dtype)
        b = bias if m % 2 else None
        check_close(run(kind, x, w, b), reference(kind, x, w, b), dtype)


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_linear_many_rows_in_chunks(kind):
    """bf16 x larger than the AMX GEMM's x chunk (768 KiB): 300 rows of K = 2,048 go as 256 + 44,
    each chunk against every block of W."""
    n, k, g = 45, 2048, 32
    w = make(kind, n, k, g)
    x = torch.randn(300, k).to(torch.bfloat16)
    bias = torch.randn(n)
    check_close(run(kind, x, w, bias), reference(kind, x, w, bias), torch.bfloat16)


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_linear_prefill_rows_dense_path(kind):
    """From 1,024 rows of bf16 x, W is dequantized to bf16 in panels of at most 16 MiB, each
    multiplied by at::mm: 2,100 x 4,096 goes as 2,048 + 52 rows of W. Strided x, with and
    without a bias; a small W in one panel."""
    n, k, g = 2100, 4096, 64
    w = make(kind, n, k, g)
    x = torch.randn(1030, 2 * k).to(torch.bfloat16)[:, ::2]
    bias = torch.randn(n)
    check_close(run(kind, x, w, bias), reference(kind, x, w, bias), torch.bfloat16)
    n, k, g = 45, 320, 32
    w = make(kind, n, k, g)
    x = torch.randn(1024, k).to(torch.bfloat16)
    check_close(run(kind, x, w), reference(kind, x, w), torch.bfloat16)


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 3, 40])
def test_linear_3d_and_noncontiguous(kind, dtype, m):
    n, k, g = 45, 320, 32
    w = make(kind, n, k, g)
    base = torch.randn(2, k, 2 * m).to(dtype)
    x = base.transpose(1, 2)[:, ::2]  # [2, m, k], strided in every dim
    assert not x.is_contiguous()
    bias = torch.randn(n).to(dtype)
    check_close(run(kind, x, w, bias), reference(kind, x, w, bias), dtype)
    x1 = torch.randn(k).to(dtype)  # 1-D input
    check_close(run(kind, x1, w), reference(kind, x1, w), dtype)


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("g", [32, 64, 128])
def test_gemv_16bit_activations_wide_range(kind, dtype, g):
    """The GEMV path quantizes 16-bit x to int16 with a power-of-two scale per group: values within
    2^7 (bf16) / 2^4 (fp16) of their group's largest are held exactly, smaller ones to 2^-16 of it.
    Outliers 1000x the rest, and groups of tiny values next to normal ones, stay as accurate as
    the reference computed from the same x."""
    n, k = 40, 4 * g
    w = make(kind, n, k, g)
    for m in (1, 2, 4):
        x = torch.randn(m, k)
        x[:, ::37] *= 1000.0  # outliers inside groups
        x[:, :g] *= 1e-30  # one group of tiny values (near the bottom of the fp32 range for bf16)
        if dtype == torch.float16:
            x = x.clamp(-6e4, 6e4)
        x = x.to(dtype)
        want = (x.double() @ w.dequantize().double().T)
        y = run(kind, x, w)
        err = (y.double() - want).abs().max().item()
        assert err <= 2 ** -7 * want.abs().max().item(), err  # the output's own rounding, 2^-8 / 2^-11
        # The tiny group alone: exact to its own scale, not swamped by the other groups.
        xs = torch.zeros_like(x)
        xs[:, :g] = x[:, :g]
        want_s = xs.double() @ w.dequantize().double().T
        y_s = run(kind, xs, w).double()
        assert (y_s - want_s).abs().max().item() <= 2 ** -7 * want_s.abs().max().item() + 1e-45


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_gemv_non_finite_activations_propagate(kind, dtype, bad):
    """A NaN or inf in x makes every output of its row non-finite, as x @ W's would be (the int16
    image of x must not silently drop it); the other rows are unaffected."""
    w = make(kind, 24, 128, 32)
    x = torch.randn(3, 128).to(dtype)
    x[1, 70] = bad
    y = run(kind, x, w)
    assert not torch.isfinite(y[1]).any()
    check_close(y[[0, 2]], reference(kind, x[[0, 2]], w), dtype)


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_linear_empty_batch(kind):
    w = make(kind, 16, 64, 32)
    assert run(kind, torch.randn(0, 64), w).shape == (0, 16)


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_dequantize_matches_reference_unpacking(kind):
    w = make(kind, 37, 224, 32)
    if kind == "int4":
        want = ref.dequantize_int4(w.qweight, w.scale, w.min, 32)
    else:
        want = ref.dequantize_int8(w.qweight, w.scale, 32)
    assert torch.equal(w.dequantize(), want)


def test_bad_inputs():
    w4 = make("int4", 16, 128, 32)
    w8 = make("int8", 16, 128, 32)
    x = torch.randn(3, 128)
    with pytest.raises(ValueError, match=r"x.size\(-1\).*must be 128 .*, got 96"):
        ops.int4_linear(torch.randn(3, 96), w4)
    with pytest.raises(ValueError, match=r"x.size\(-1\).*must be 128 .*, got 64"):
        ops.int8_linear(torch.randn(3, 64), w8)
    with pytest.raises(ValueError, match="x must have dtype Float or BFloat16 or Half, got Int"):
        ops.int4_linear(torch.ones(3, 128, dtype=torch.int32), w4)
    with pytest.raises(ValueError, match="group_size must be 32, 64 or 128, got 16"):
        torch.ops.pagedinfer.int4_linear(x, w4.qweight, w4.scale, w4.min, 16)
    with pytest.raises(ValueError, match="qweight must have dtype Byte, got Char"):
        torch.ops.pagedinfer.int4_linear(x, w4.qweight.view(torch.int8), w4.scale, w4.min, 32)
    with pytest.raises(ValueError, match="scale must have dtype Half, got Float"):
        torch.ops.pagedinfer.int8_linear(x, w8.qweight, w8.scale.float(), 32)
    with pytest.raises(ValueError, match=r"qweight.size\(1\).*must be 64, got 32"):
        torch.ops.pagedinfer.int4_linear(x, w4.qweight[:, :32].contiguous(), w4.scale, w4.min, 32)
    with pytest.raises(ValueError, match=r"min.size\(0\) \(N, out_features\) must be 16, got 8"):
        torch.ops.pagedinfer.int4_linear(x, w4.qweight, w4.scale, w4.min[:8], 32)
    with pytest.raises(ValueError, match=r"bias.size\(0\) \(N, out_features\) must be 16, got 15"):
        ops.int8_linear(x, w8, torch.randn(15))
    with pytest.raises(ValueError, match="must be divisible by group_size 64, got K=96"):
        Int4Weight.quantize(torch.randn(4, 96), 64)
    with pytest.raises(ValueError, match="group_size must be one of"):
        Int8Weight.quantize(torch.randn(4, 96), 48)


@pytest.mark.parametrize("m", [1, 33])
def test_opcheck(m):
    w4 = make("int4", 24, 192, 64)
    w8 = make("int8", 24, 192, 32)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(m, 192).to(dtype)
        b = torch.randn(24).to(dtype)
        torch.library.opcheck(torch.ops.pagedinfer.int4_linear, (x, w4.qweight, w4.scale, w4.min, 64, b))
        torch.library.opcheck(torch.ops.pagedinfer.int8_linear, (x, w8.qweight, w8.scale, 32, None))


def test_under_torch_compile():
    from pagedinfer.nn import Int4Linear

    layer = Int4Linear.from_float(torch.nn.Linear(128, 40), group_size=32)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 5, 128)
    check_close(compiled(x), layer(x), torch.float32)


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_in_inference_mode_on_every_thread(kind, dtype):
    """Big enough for several panels / row blocks on both threads, under torch.inference_mode (the
    engine's mode): the worker threads must carry the caller's thread-local state."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        w = torch.randn(1024, 512)
        qw = (Int4Weight if kind == "int4" else Int8Weight).quantize(w, 32)
        with torch.inference_mode():
            x = torch.randn(37, 512).to(dtype)
            y = (ops.int4_linear if kind == "int4" else ops.int8_linear)(x, qw)
        want = x.float() @ qw.dequantize().T
        torch.testing.assert_close(y.float(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())
    finally:
        torch.set_num_threads(threads)

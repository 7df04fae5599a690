"""CUDA kernels against the pure-PyTorch references and against the CPU ops, for both CUDA kernel
variants (the optimized ones and their straightforward reference twins). Skipped without a GPU;
bench/gpu_check.sh runs them (plus compute-sanitizer) on a GPU machine."""
from __future__ import annotations

import pytest
import torch

import pagedinfer
import pagedinfer.ops as ops
from conftest import DEVICES, poison_
import reference as ref
from pagedinfer.quant import Int4Weight, Int8Weight
from test_attention import MIXED, make_batch

pytestmark = pytest.mark.skipif("cuda" not in DEVICES, reason="needs a CUDA GPU and a CUDA build")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Max abs error vs the fp64 reference (outputs are O(1)). Looser than the CPU op's for the 16-bit
# types: the tensor-core prefill kernel rounds the probabilities P to bf16/fp16 before P @ V, as
# FlashAttention does.
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


@pytest.fixture(params=["fast", "reference"])
def impl(request):
    pagedinfer._C.set_cuda_impl(request.param)
    yield request.param
    pagedinfer._C.set_cuda_impl("fast")


def run_attention(args, **kw):
    out = poison_(torch.empty_like(args[0]))
    got = ops.paged_attention(*args, out=out, **kw)
    assert got is out
    return got


def check_attention(args, dtype, **kw):
    want = ref.paged_attention(*args, **kw)
    got = run_attention(args, **kw)
    torch.testing.assert_close(got.double(), want.double(), atol=TOL[dtype], rtol=0)
    return got


# ---- paged attention -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Hq,Hkv", [(8, 8), (6, 2), (8, 2), (16, 2), (4, 1), (32, 8)])
@pytest.mark.parametrize("block_size", [16, 3])
def test_attention_mixed_batch(dtype, Hq, Hkv, block_size, impl):
    check_attention(make_batch(MIXED, Hq, Hkv, 64, block_size, dtype, device="cuda"), dtype)


@pytest.mark.parametrize("D", [64, 80, 96, 128, 256, 8, 40, 33])
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_head_sizes(D, dtype, impl):
    check_attention(make_batch([(1, 70), (9, 20), (1, 1)], 6, 2, D, 16, dtype, device="cuda"), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [16, 32, 64, 1, 100])
@pytest.mark.parametrize("window", [0, 5, 700])
def test_attention_long_decode_split_k(dtype, block_size, window, impl):
    """Contexts over many partitions (split-K + merge), with spare block-table capacity so some
    partitions are empty for every sequence."""
    specs = [(1, 3000), (1, 513), (1, 1), (2, 2049), (1, 511)]
    args = make_batch(specs, 8, 2, 128, block_size, dtype, device="cuda")
    check_attention(args, dtype, sliding_window=window or None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("window", [0, 50])
def test_attention_long_prefill_tiles(dtype, D, window, impl):
    """Several 64-query tiles per sequence: a long prompt, a chunk of a prompt over a cached
    prefix, a verification step, and decode rows alongside (split kernel in the same call)."""
    specs = [(200, 200), (130, 400), (5, 77), (1, 900), (64, 64), (65, 1000)]
    args = make_batch(specs, 8, 2, D, 16, dtype, device="cuda")
    check_attention(args, dtype, sliding_window=window or None)


def test_attention_wide_gqa_group():
    """A GQA group of 64 heads: smaller partitions so the group's logits fit in shared memory."""
    check_attention(make_batch([(1, 1500), (3, 40)], 64, 1, 128, 16, torch.bfloat16, device="cuda"),
                    torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_matches_cpu_op(dtype):
    args = make_batch(MIXED, 8, 2, 128, 16, dtype, device="cuda")
    got = run_attention(args)
    want = run_attention(tuple(a.cpu() for a in args))
    torch.testing.assert_close(got.cpu().double(), want.double(), atol=2 * TOL[dtype], rtol=0)


def test_attention_strided_query_and_out(impl):
    T, Hq, Hkv, D = 27, 8, 2, 64
    query, kc, vc, qsl, sl, bt = make_batch([(1, 40), (20, 20), (6, 30)], Hq, Hkv, D, 16, torch.float32,
                                            device="cuda")
    q = torch.randn(T, (Hq + 2 * Hkv) * D, device="cuda")[:, : Hq * D].view(T, Hq, D)
    big = poison_(torch.empty(T, Hq + 1, D, device="cuda"))
    ops.paged_attention(q, kc, vc, qsl, sl, bt, scale=0.3, out=big[:, 1:])
    want = ref.paged_attention(q, kc, vc, qsl, sl, bt, scale=0.3)
    torch.testing.assert_close(big[:, 1:], want, atol=TOL[torch.float32], rtol=0)
    assert big[:, 0].isnan().all()


def test_attention_dropped_window_blocks_and_bad_ids():
    args = make_batch([(1, 100)], 4, 2, 64, 16, torch.float32, device="cuda")
    want = ref.paged_attention(*args, sliding_window=20)
    args[5][0, :4] = -1
    torch.testing.assert_close(run_attention(args, sliding_window=20), want, atol=2e-5, rtol=0)
    with pytest.raises(IndexError, match=r"block_tables\[0, 3\] = -1"):
        ops.paged_attention(*args, sliding_window=40)
    with pytest.raises(IndexError, match=r"seq_lens\[0\] = 1000 exceeds"):
        ops.paged_attention(*args[:4], torch.tensor([1000], dtype=torch.int32, device="cuda"), args[5])


def test_attention_cuda_graph_capture():
    """Decode under CUDA graph capture (no host-side index checks there); replays with new data."""
    args = make_batch([(1, 300), (1, 17), (1, 1000)], 8, 2, 128, 16, torch.bfloat16, device="cuda")
    out = torch.empty_like(args[0])
    ops.paged_attention(*args, out=out)  # warm up (sets the kernel's shared memory attribute)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.paged_attention(*args, out=out)
    args[0].copy_(torch.randn_like(args[0]))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out.double(), ref.paged_attention(*args).double(), atol=TOL[torch.bfloat16], rtol=0)


def test_attention_opcheck():
    args = make_batch([(1, 20), (5, 5), (2, 30)], 4, 2, 64, 16, torch.float32, device="cuda")
    out = torch.empty_like(args[0])
    torch.library.opcheck(torch.ops.pagedinfer.paged_attention, (*args, 0.125, 0, out))
    torch.library.opcheck(torch.ops.pagedinfer.paged_attention, (*args, 0.125, 8, out))


# ---- INT4 / INT8 linear --------------------------------------------------------------------------

def quantized(bits, N, K, G, device="cuda"):
    w = torch.randn(N, K)
    q = Int4Weight.quantize(w, G) if bits == 4 else Int8Weight.quantize(w, G)
    return q.to(device)


def linear(bits, x, qw, bias=None):
    return ops.int4_linear(x, qw, bias) if bits == 4 else ops.int8_linear(x, qw, bias)


def linear_tol(dtype, K):
    # Products of values rounded to dtype, fp32 sums in another order, one output rounding.
    return {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}[dtype] * max(1.0, (K / 256) ** 0.5)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 3, 16, 19, 64, 65, 130])
@pytest.mark.parametrize("N,K,G", [(1, 32, 32), (65, 96, 32), (200, 320, 64), (256, 1024, 128), (130, 4096, 128)])
def test_linear_against_dequantized_matmul(bits, dtype, M, N, K, G, impl):
    qw = quantized(bits, N, K, G)
    x = torch.randn(M, K, device="cuda").to(dtype)
    want = (x.double() @ qw.dequantize(torch.float32).to(dtype).double().T)
    got = linear(bits, x, qw)
    assert got.dtype == dtype and got.shape == (M, N)
    scale = want.abs().max().item() + 1
    torch.testing.assert_close(got.double() / scale, want / scale, atol=linear_tol(dtype, K), rtol=0)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_fast_matches_reference_kernel_and_cpu(bits, dtype):
    qw = quantized(bits, 300, 2048, 64)
    x = torch.randn(2, 7, 2048, device="cuda").to(dtype)  # leading dims
    bias = torch.randn(300, device="cuda").to(dtype)
    fast = linear(bits, x, qw, bias)
    pagedinfer._C.set_cuda_impl("reference")
    try:
        slow = linear(bits, x, qw, bias)
    finally:
        pagedinfer._C.set_cuda_impl("fast")
    cpu = linear(bits, x.cpu(), qw.to("cpu"), bias.cpu())
    assert fast.shape == (2, 7, 300)
    torch.testing.assert_close(fast.float(), slow.float(), atol=linear_tol(dtype, 2048) * 10, rtol=1e-2)
    torch.testing.assert_close(fast.cpu().float(), cpu.float(), atol=linear_tol(dtype, 2048) * 10, rtol=1e-2)


def test_linear_noncontiguous_x_and_empty():
    qw = quantized(4, 64, 256, 32)
    x = torch.randn(5, 512, device="cuda", dtype=torch.bfloat16)[:, ::2]
    want = x.float() @ qw.dequantize(torch.float32).bfloat16().float().T
    torch.testing.assert_close(ops.int4_linear(x, qw).float(), want, atol=0.2, rtol=1e-2)
    assert ops.int4_linear(torch.empty(0, 256, device="cuda", dtype=torch.bfloat16), qw).shape == (0, 64)


def test_linear_bad_input():
    qw = quantized(4, 64, 256, 32)
    with pytest.raises(ValueError, match=r"x.size\(-1\) \(K, in_features\) must be 256"):
        ops.int4_linear(torch.randn(3, 128, device="cuda"), qw)
    with pytest.raises(ValueError, match=r"qweight and scale must be on the same device"):
        torch.ops.pagedinfer.int4_linear(torch.randn(3, 256, device="cuda"), qw.qweight.cpu(), qw.scale,
                                         qw.min, 32, None)
    with pytest.raises(ValueError, match=r"bias.size\(0\) \(N, out_features\) must be 64"):
        ops.int4_linear(torch.randn(3, 256, device="cuda"), qw, torch.zeros(3, device="cuda"))


@pytest.mark.parametrize("bits", [4, 8])
def test_linear_opcheck(bits):
    qw = quantized(bits, 64, 256, 64)
    x = torch.randn(3, 256, device="cuda", dtype=torch.bfloat16)
    if bits == 4:
        torch.library.opcheck(torch.ops.pagedinfer.int4_linear, (x, qw.qweight, qw.scale, qw.min, 64, None))
    else:
        torch.library.opcheck(torch.ops.pagedinfer.int8_linear, (x, qw.qweight, qw.scale, 64, None))

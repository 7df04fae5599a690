"""The CUDA kernels' index arithmetic (csrc/kernels/cuda/layout.h), run on the host through
pagedinfer._C.cuda_layout: runs on every machine, GPU or not. emulate_fast_gemm walks the
tensor-core GEMM's loops (grid, warps, split-K, slabs, per-lane fragments) with mma.sync replaced
by the product of the fragments placed by the PTX fragment maps."""
from __future__ import annotations

import bisect
import itertools

import pytest
import torch

import pagedinfer
from pagedinfer.quant import Int4Weight, Int8Weight

L = pagedinfer._C.cuda_layout


# ---- mma.sync m16n8k16 fragment maps -------------------------------------------------------------

def test_mma_fragment_maps_cover_their_tiles_once():
    a, b, c = L.mma_fragments()
    assert sorted((r, col) for *_, r, col in a) == [(r, col) for r in range(16) for col in range(16)]
    assert sorted((k, n) for *_, k, n in b) == [(k, n) for k in range(16) for n in range(8)]
    assert sorted((r, col) for *_, r, col in c) == [(r, col) for r in range(16) for col in range(8)]
    # A register r's two halves are adjacent columns: the kernel loads them as one 32-bit word.
    amap = {(lane, r, e): (row, col) for lane, r, e, row, col in a}
    for lane, r in itertools.product(range(32), range(4)):
        (r0, c0), (r1, c1) = amap[lane, r, 0], amap[lane, r, 1]
        assert r0 == r1 and c1 == c0 + 1 and c0 % 2 == 0
    # A lane holds the same k columns in A (regs r, r + 2 -> k, k + 8) as in B: that is what lets
    # the GEMM permute k inside a slab for A and B alike.
    bmap = {(lane, r, e): (k, n) for lane, r, e, k, n in b}
    for lane in range(32):
        a_cols = {amap[lane, r, e][1] for r in range(4) for e in range(2)}
        b_ks = {bmap[lane, r, e][0] for r in range(2) for e in range(2)}
        assert a_cols == b_ks


def test_prefill_tile_bound_covers_every_batch_shape():
    gen = torch.Generator().manual_seed(1)
    for _ in range(300):
        B = int(torch.randint(1, 40, (1,), generator=gen))
        q = torch.randint(0, int(torch.randint(1, 300, (1,), generator=gen)) + 1, (B,), generator=gen).tolist()
        T = sum(q)
        tiles = sum(L.prefill_tiles_of(x) for x in q)
        assert tiles == sum(-(-x // 64) for x in q if x > 1)
        assert tiles <= L.prefill_tile_bound(T, B)


def test_attention_p_fragments_are_s_accumulators():
    """The prefill kernel feeds P to the second mma straight from the first mma's accumulators:
    A register r, half e of key step kk must hold the C element of S at the same (row, key)."""
    a, _, c = L.mma_fragments()
    cmap = {(lane, i): (row, col) for lane, i, row, col in c}
    for lane, r, e, row, col in a:
        tile, elem = L.p_from_s(r, e)
        s_row, s_col = cmap[lane, elem]
        assert (s_row, 8 * tile + s_col) == (row, col)


# ---- GEMM slab order and the quant.py formats ----------------------------------------------------

@pytest.mark.parametrize("bits", [4, 8])
def test_slab_virtual_order_is_a_pairwise_bijection(bits):
    phys = [L.slab_phys_k(bits, v, vk) for v in range(8) for vk in range(16)]
    assert sorted(phys) == list(range(128))
    for v, vk in itertools.product(range(8), range(16)):
        assert L.slab_virtual_k(bits, L.slab_phys_k(bits, v, vk)) == 16 * v + vk
    for p in range(0, 128, 2):  # x is staged as pairs of adjacent k
        assert L.slab_virtual_k(bits, p + 1) == L.slab_virtual_k(bits, p) + 1


@pytest.mark.parametrize("bits", [4, 8])
def test_lane_fragments_decode_the_virtual_k(bits):
    """The byte / nibble a lane decodes for (tile v, value i) is the physical k that the x staging
    puts at the B-fragment's virtual position."""
    _, b, _ = L.mma_fragments()
    for lane, r, e, k, n in b:
        for v in range(8):
            assert L.lane_fragment_phys_k(bits, lane, v, 2 * r + e) == L.slab_phys_k(bits, v, k)


@pytest.mark.parametrize("N,K,G", [(3, 32, 32), (5, 96, 32), (7, 320, 64), (2, 128, 128)])
def test_weight_byte_matches_quant_py(N, K, G):
    q4 = torch.randint(0, 16, (N, K), dtype=torch.uint8)
    w4 = Int4Weight.from_parts(q4, torch.ones(N, K // G), torch.zeros(N, K // G), G)
    q8 = torch.randint(-128, 128, (N, K), dtype=torch.int8)
    packed4 = w4.qweight.flatten().tolist()
    packed8 = q8.flatten().tolist()
    for n, k in itertools.product(range(N), range(K)):
        byte, shift = L.weight_byte(4, n, k, K)
        assert (packed4[byte] >> shift) & 0xF == q4[n, k]
        byte, shift = L.weight_byte(8, n, k, K)
        assert byte == n * K + k and packed8[byte] == q8[n, k]


@pytest.mark.parametrize("n,k,sms", [(8192, 8192, 132), (576, 576, 132), (64, 32, 1), (49152, 576, 108),
                                     (1, 4096, 80), (1536, 128, 132)])
def test_plan_gemm_covers_k_without_empty_splits(n, k, sms):
    splits, per = L.plan_gemm(n, k, sms)
    chunks = -(-k // 128)
    assert splits >= 1 and per >= 1
    assert splits * per >= chunks and (splits - 1) * per < chunks
    assert splits == 1 or per >= 2


def _quantized(bits, N, K, G):
    w = torch.randn(N, K)
    return Int4Weight.quantize(w, G) if bits == 4 else Int8Weight.quantize(w, G)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,N,K,G,sms", [
    (1, 8, 32, 32, 132), (3, 65, 96, 32, 132), (19, 200, 320, 64, 132), (70, 64, 384, 128, 132),
    (16, 130, 1024, 32, 2), (64, 1, 256, 128, 1),
])
def test_emulated_fast_gemm_matches_dequantized_matmul(bits, dtype, M, N, K, G, sms):
    qw = _quantized(bits, N, K, G)
    x = torch.randn(M, K).to(dtype).float()
    got = L.emulate_fast_gemm(x, qw.qweight, qw.scale, qw.min if bits == 4 else None, bits, G,
                              str(dtype).split(".")[1], sms)
    want = x.double() @ qw.dequantize(torch.float32).to(dtype).double().T
    # Same products, fp32 sums in another order.
    torch.testing.assert_close(got.double(), want, atol=1e-4 * K ** 0.5, rtol=1e-5)


# ---- paged attention -----------------------------------------------------------------------------

def test_find_sequence_matches_bisect():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        lens = torch.randint(0, 4, (int(torch.randint(1, 12, (1,), generator=gen)),), generator=gen).tolist()
        lens[-1] = max(lens[-1], 1)
        qsl = [0] + list(itertools.accumulate(lens))
        for t in range(qsl[-1]):
            assert L.find_sequence(qsl, t) == bisect.bisect_right(qsl, t) - 1


@pytest.mark.parametrize("seq_len,q_len,window", [(1, 1, 0), (40, 5, 0), (100, 1, 20), (19, 19, 4), (7, 3, 100)])
def test_key_range(seq_len, q_len, window):
    for j in range(q_len):
        pos = seq_len - q_len + j
        begin = max(0, pos - window + 1) if window > 0 else 0
        assert L.key_range(seq_len, q_len, j, window) == (begin, pos + 1)


def test_kv_offset_matches_tensor_indexing():
    num_blocks, bs, hkv, d = 7, 5, 3, 16
    cache = torch.arange(num_blocks * bs * hkv * d).view(num_blocks, bs, hkv, d)
    flat = cache.flatten()
    for block, p, h in itertools.product([0, 3, 6], [0, 4, 12, 33], range(hkv)):
        off = L.kv_offset(block, p, bs, hkv, d, h)
        assert torch.equal(flat[off:off + d], cache[block, p % bs, h])


@pytest.mark.parametrize("group", [1, 2, 3, 4, 8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("max_context,window", [(1, 0), (4096, 0), (16 * 1000, 0), (131072, 4096), (100, 7)])
def test_plan_attention(group, max_context, window):
    part, num = L.plan_attention(max_context, window, group)
    span = min(max_context, window) if window > 0 else max_context
    assert part * group <= 8192 and part >= 32
    assert num * part >= span and (num - 1) * part < max(span, 1)


@pytest.mark.parametrize("dtype_bytes", [4, 2])
@pytest.mark.parametrize("D", [64, 80, 96, 128, 256])
def test_attention_split_smem_fits_sm80_for_common_groups(D, dtype_bytes):
    for group in (1, 2, 4, 8, 16):
        part, _ = L.plan_attention(4096, 0, group)
        tpk = L.attention_threads_per_key(D, dtype_bytes)
        assert tpk * 16 >= D * dtype_bytes or tpk == 32
        assert 4 * L.attention_split_smem_floats(D, dtype_bytes, group, part) <= 163 * 1024


def test_set_cuda_impl():
    assert pagedinfer._C.cuda_impl() in ("fast", "reference")
    with pytest.raises(ValueError, match="expected 'fast' or 'reference'"):
        pagedinfer._C.set_cuda_impl("fastest")
    pagedinfer._C.set_cuda_impl("reference")
    assert pagedinfer._C.cuda_impl() == "reference"
    pagedinfer._C.set_cuda_impl("fast")
    assert pagedinfer._C.cuda_impl() == "fast"

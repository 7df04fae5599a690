"""paged_attention against tests/reference.py: decode, prefill, chunked prefill and verification
mixed in one batch, over dtypes, GQA ratios, head sizes, block sizes, sliding windows and ISAs."""
from __future__ import annotations

import pytest
import torch

import pagedinfer
import pagedinfer.ops as ops
from conftest import DEVICES, poison_
import reference as ref

# Error allowed vs the fp64 reference rounded to the dtype, as (atol, rtol); outputs are O(1).
# fp32 sums in another order; bf16 / fp16 may land an output ulp or two away (the bf16 fast path
# also rounds the softmax weights to bf16 for P.V, as GPU flash attention does).
TOL = {torch.float32: (2e-5, 1e-5), torch.bfloat16: (1.6e-2, 1.6e-2), torch.float16: (2e-3, 2e-3)}


def make_batch(specs, Hq, Hkv, D, block_size, dtype, device="cpu", spare_blocks=3):
    """specs: list of (q_len, seq_len). Builds caches whose blocks are handed out in shuffled
    order, and block tables padded with -1 past each sequence's last block."""
    need = [(s + block_size - 1) // block_size for _, s in specs]
    max_blocks = max(need + [1]) + 1
    num_blocks = sum(need) + spare_blocks
    key_cache = torch.randn(num_blocks, block_size, Hkv, D, device=device).to(dtype)
    value_cache = torch.randn(num_blocks, block_size, Hkv, D, device=device).to(dtype)
    ids = torch.randperm(num_blocks).tolist()
    block_tables = torch.full((len(specs), max_blocks), -1, dtype=torch.int32)
    for i, n in enumerate(need):
        block_tables[i, :n] = torch.tensor(ids[:n], dtype=torch.int32)
        ids = ids[n:]
    qsl = [0]
    for q_len, _ in specs:
        qsl.append(qsl[-1] + q_len)
    query = torch.randn(qsl[-1], Hq, D, device=device).to(dtype)
    return (query, key_cache, value_cache, torch.tensor(qsl, dtype=torch.int32, device=device),
            torch.tensor([s for _, s in specs], dtype=torch.int32, device=device),
            block_tables.to(device))


def check(args, dtype, **kw):
    want = ref.paged_attention(*args, **kw)
    out = poison_(torch.empty_like(args[0]))
    got = ops.paged_attention(*args, out=out, **kw)
    assert got is out
    torch.testing.assert_close(got.double(), want.double(), atol=TOL[dtype][0], rtol=TOL[dtype][1])


@pytest.fixture(params=["best", "avx2", "scalar"])
def isa(request):
    pagedinfer._C.set_cpu_isa(request.param)
    yield request.param
    pagedinfer._C.set_cpu_isa("best")


# (q_len, seq_len): decode, prefill, chunked prefill / prefix hit, 4+1 verification, empty.
MIXED = [(1, 1), (1, 17), (19, 19), (5, 40), (0, 9), (1, 32), (33, 33), (7, 111), (1, 300), (16, 16)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("Hq,Hkv", [(8, 8), (6, 2), (8, 2), (16, 2), (4, 1)])
@pytest.mark.parametrize("block_size", [16, 3])
def test_mixed_batch(device, dtype, Hq, Hkv, block_size, isa):
    check(make_batch(MIXED, Hq, Hkv, 64, block_size, dtype, device), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("window", [1, 5, 16, 100])
def test_sliding_window(dtype, window, isa):
    check(make_batch(MIXED, 8, 2, 64, 16, dtype), dtype, sliding_window=window)


@pytest.mark.parametrize("D", [64, 80, 96, 128, 256, 8, 40, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_sizes(D, dtype, isa):
    specs = [(1, 20), (9, 9), (3, 50)]
    check(make_batch(specs, 6, 2, D, 16, dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("block_size", [16, 32, 64, 128, 1, 100])
def test_long_sequences(dtype, block_size, isa):
    """seq_lens up to 3000, exact multiples of the block size and one past; long decodes take the
    split-K path (several items per sequence merged by log-sum-exp)."""
    specs = [(1, 3000), (1, 2 * block_size), (1, 2 * block_size + 1), (2, 1500), (40, 700)]
    check(make_batch(specs, 8, 2, 64, block_size, dtype), dtype)
    check(make_batch([(1, 3000)], 4, 1, 128, block_size, dtype), dtype, sliding_window=1000)


@pytest.mark.parametrize("amx", ["1", "0"])
@pytest.mark.parametrize("Hq,Hkv,D", [(8, 2, 128), (12, 4, 64), (32, 1, 96), (3, 3, 256)])
def test_bf16_tile_kernels(amx, Hq, Hkv, D, monkeypatch):
    """Prefill-sized bf16 tiles run on AMX when present, else on the AVX-512 tile kernel
    (PAGEDINFER_ATTN_AMX=0 forces the latter): both against the reference, windows included."""
    monkeypatch.setenv("PAGEDINFER_ATTN_AMX", amx)
    specs = [(77, 77), (40, 300), (16, 16), (1, 50), (9, 33)]
    check(make_batch(specs, Hq, Hkv, D, 16, torch.bfloat16), torch.bfloat16)
    check(make_batch(specs, Hq, Hkv, D, 7, torch.bfloat16), torch.bfloat16, sliding_window=29)


@pytest.mark.parametrize("amx", ["1", "0"])
@pytest.mark.parametrize("Hq,Hkv,D", [(32, 8, 128), (9, 3, 64), (8, 1, 256), (4, 4, 32), (12, 4, 32), (14, 2, 96)])
@pytest.mark.parametrize("block_size", [16, 32, 5])
def test_bf16_decode_kernels(amx, Hq, Hkv, D, block_size, monkeypatch):
    """Items of up to 8 query rows per KV head (decode, short verification) run on the AMX decode
    kernel when present (PAGEDINFER_ATTN_AMX=0: on the vdpbf16ps one). Lengths around its 16-key
    groups and 64-key chunks; block sizes that give 16 consecutive slots per group and one that
    never does (its groups are gathered first)."""
    monkeypatch.setenv("PAGEDINFER_ATTN_AMX", amx)
    rows = 2 if Hq // Hkv <= 4 else 1  # q_len 2 (verification) where it keeps <= 8 rows
    specs = [(1, 1), (1, 15), (1, 16), (1, 17), (1, 64), (rows, 65), (rows, 300), (1, 1000)]
    check(make_batch(specs, Hq, Hkv, D, block_size, torch.bfloat16), torch.bfloat16)
    check(make_batch(specs, Hq, Hkv, D, block_size, torch.bfloat16), torch.bfloat16, sliding_window=37)


@pytest.mark.parametrize("amx", ["1", "0"])
def test_bf16_decode_growing_scores(amx, monkeypatch):
    """Scores that climb to ~400 along 1,500 keys, with one spike: exp overflows unless the
    running max keeps up (the AMX decode kernel re-bases it only past a threshold; with too
    large a threshold this test fails)."""
    monkeypatch.setenv("PAGEDINFER_ATTN_AMX", amx)
    D, bs = 128, 16
    specs = [(1, 1500), (1, 333)]
    query, key_cache, value_cache, qsl, seq_lens, tables = make_batch(specs, 8, 2, D, bs, torch.bfloat16)
    query = torch.full_like(query, 1.0)
    key_cache = (key_cache.float() * 0.1).bfloat16()
    for i, n in enumerate(seq_lens.tolist()):
        for j in range(n):
            rise = j / 40 + (10.0 if j == 1000 else 0.0)
            key_cache[tables[i, j // bs], j % bs] += rise
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # one item per sequence: no split-K to cut the climb short
    try:
        check((query, key_cache, value_cache, qsl, seq_lens, tables), torch.bfloat16)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_split_k_thread_counts(threads):
    """The plan depends on the thread count: every split must give the same answer."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check(make_batch([(1, 2500), (3, 900)], 8, 2, 128, 16, torch.bfloat16), torch.bfloat16)
    finally:
        torch.set_num_threads(old)


def test_scale_noncontiguous_query_and_out(isa):
    """query as a slice of a fused QKV projection; out as a strided view; a custom scale."""
    T, Hq, Hkv, D = 27, 8, 2, 64
    specs = [(1, 40), (20, 20), (6, 30)]
    query, key_cache, value_cache, qsl, seq_lens, tables = make_batch(specs, Hq, Hkv, D, 16, torch.float32)
    qkv = torch.randn(T, (Hq + 2 * Hkv) * D)
    q = qkv[:, : Hq * D].view(T, Hq, D)
    assert not q.is_contiguous()
    args = (q, key_cache, value_cache, qsl, seq_lens, tables)
    want = ref.paged_attention(*args, scale=0.3)
    big = poison_(torch.empty(T, Hq + 1, D))
    out = big[:, 1:]
    ops.paged_attention(*args, scale=0.3, out=out)
    torch.testing.assert_close(out, want, atol=TOL[torch.float32][0], rtol=TOL[torch.float32][1])
    assert big[:, 0].isnan().all()  # nothing written outside out
    q_strided_d = torch.randn(T, Hq, 2 * D)[..., ::2]
    args = (q_strided_d, key_cache, value_cache, qsl, seq_lens, tables)
    torch.testing.assert_close(ops.paged_attention(*args), ref.paged_attention(*args),
                               atol=TOL[torch.float32][0], rtol=TOL[torch.float32][1])


def test_empty_batches():
    query, kc, vc, qsl, seq_lens, tables = make_batch([(0, 5), (0, 0)], 4, 2, 64, 16, torch.float32)
    assert ops.paged_attention(query, kc, vc, qsl, seq_lens, tables).shape == (0, 4, 64)
    empty = ops.paged_attention(torch.empty(0, 4, 64), kc, vc, torch.zeros(1, dtype=torch.int32),
                                torch.zeros(0, dtype=torch.int32), torch.zeros(0, 3, dtype=torch.int32))
    assert empty.shape == (0, 4, 64)


# ---- bad input: a clear error naming the argument --------------------------------------------

def _good():
    q, kc, vc, qsl, sl, bt = make_batch([(1, 20), (3, 3)], 4, 2, 64, 16, torch.float32, spare_blocks=0)
    return dict(query=q, key_cache=kc, value_cache=vc, query_start_loc=qsl, seq_lens=sl, block_tables=bt)


def _set(name, fn):
    return lambda a: a.update({name: fn(a[name])})


def _poke(name, idx, value):
    def f(t):
        t = t.clone()
        t[idx] = value
        return t
    return _set(name, f)


@pytest.mark.parametrize("mutate,error,pattern", [
    (_poke("block_tables", (0, 1), 3), IndexError, r"block_tables\[0, 1\] = 3 is not a block id in \[0, num_blocks = 3\)"),
    (_poke("block_tables", (1, 0), -1), IndexError, r"block_tables\[1, 0\] = -1"),
    (_poke("seq_lens", 0, 48), IndexError, r"block_tables\[0, 2\] = -1 is not a block id .* up to position 47"),
    (_poke("seq_lens", 0, 49), IndexError, r"seq_lens\[0\] = 49 exceeds what block_tables can address"),
    (_poke("seq_lens", 1, 2), IndexError, r"seq_lens\[1\] = 2 is less than the sequence's query count 3"),
    (_poke("query_start_loc", 1, 5), IndexError, r"query_start_loc must be non-decreasing"),
    (_poke("query_start_loc", 2, 3), IndexError, r"query_start_loc\[2\] \(the last entry\) must equal T = query.size\(0\) = 4, got 3"),
    (_poke("query_start_loc", 0, 1), IndexError, r"query_start_loc\[0\] must be 0, got 1"),
    (_set("query_start_loc", lambda t: t.long()), ValueError, r"query_start_loc must have dtype Int, got Long"),
    (_set("seq_lens", lambda t: t[:1]), ValueError, r"seq_lens.size\(0\) \(B, from query_start_loc\) must be 2, got 1"),
    (_set("block_tables", lambda t: t[0]), ValueError, r"block_tables must have 2 dims"),
    (_set("query", lambda t: t[:, :3]), ValueError, r"query heads \(query.size\(1\) = 3\) must be a positive multiple of the KV heads \(key_cache.size\(2\) = 2\)"),
    (_set("query", lambda t: t[..., :32]), ValueError, r"key_cache.size\(3\) \(head_dim, from query\) must be 32, got 64"),
    (_set("query", lambda t: t.to(torch.bfloat16)), ValueError, r"query and key_cache must have the same dtype, got BFloat16 and Float"),
    (_set("value_cache", lambda t: t[:2]), ValueError, r"value_cache must have the shape of key_cache"),
    (_set("key_cache", lambda t: t.transpose(0, 1).contiguous().transpose(0, 1)), ValueError, r"key_cache must be contiguous"),
    (_set("key_cache", lambda t: t.int()), ValueError, r"query and key_cache must have the same dtype"),
    (_set("query", lambda t: t.int()), ValueError, r"query must have dtype Float or BFloat16 or Half, got Int"),
])
def test_bad_input(mutate, error, pattern):
    args = _good()
    mutate(args)
    with pytest.raises(error, match=pattern):
        ops.paged_attention(**args)


def test_bad_out():
    args = _good()
    with pytest.raises(ValueError, match=r"out must have the shape of query \[4, 4, 64\], got \[4, 4, 32\]"):
        ops.paged_attention(**args, out=torch.empty(4, 4, 32))
    with pytest.raises(ValueError, match=r"query and out must have the same dtype"):
        ops.paged_attention(**args, out=torch.empty(4, 4, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"out's last dim must be contiguous"):
        ops.paged_attention(**args, out=torch.empty(4, 4, 128)[..., ::2])


def test_window_allows_dropped_blocks():
    """Blocks wholly before every query's window are never read, so they may be -1."""
    args = make_batch([(1, 100)], 4, 2, 64, 16, torch.float32)
    want = ref.paged_attention(*args, sliding_window=20)
    args[5][0, :4] = -1  # keys 0..63; the query at 99 sees 80..99
    torch.testing.assert_close(ops.paged_attention(*args, sliding_window=20), want,
                               atol=TOL[torch.float32][0], rtol=TOL[torch.float32][1])
    with pytest.raises(IndexError, match=r"block_tables\[0, 3\] = -1"):
        ops.paged_attention(*args, sliding_window=40)


# ---- PyTorch custom-op machinery ----------------------------------------------------------------

def test_opcheck():
    args = make_batch([(1, 20), (5, 5), (2, 30)], 4, 2, 64, 16, torch.float32)
    out = torch.empty_like(args[0])
    torch.library.opcheck(torch.ops.pagedinfer.paged_attention, (*args, 0.125, 0, out))
    torch.library.opcheck(torch.ops.pagedinfer.paged_attention, (*args, 0.125, 8, out))


def test_under_torch_compile():
    args = make_batch([(1, 20), (5, 5), (2, 30)], 4, 2, 64, 16, torch.float32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def layer(q, kc, vc, qsl, sl, bt):
        return ops.paged_attention(q * 2, kc, vc, qsl, sl, bt, scale=0.1).sum(-1)

    got = layer(*args)
    want = ref.paged_attention(args[0] * 2, *args[1:], scale=0.1).sum(-1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)

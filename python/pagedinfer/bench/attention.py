"""`pagedinfer bench attention`: paged attention against torch SDPA on the same K/V gathered into
contiguous [B, Hkv, S, D] tensors, in the same run.

Decode is held against the streaming read bandwidth (bytes = the K and V rows read), prefill
against the bf16 GEMM peak (FLOPs = 4 D per visible query-key pair, causal). SDPA gets every
advantage: contiguous K/V (the gather is not timed), enable_gqa, and each dtype is tried (fp32 is
often the faster CPU path), the best one being the baseline. Large cases rotate among several
caches so that the K/V read does not sit in the last-level cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import pagedinfer.ops as ops
from pagedinfer.bench.core import BenchContext, Row, rotation_count, suite
from pagedinfer.memory import empty_huge


def _paged_inputs(B, S, Hkv, D, block_size, dtype, copies):
    """`copies` independent caches, each holding B sequences of S tokens in shuffled blocks."""
    blocks_per_seq = (S + block_size - 1) // block_size
    num_blocks = B * blocks_per_seq
    caches = []
    for _ in range(copies):
        kc = empty_huge((num_blocks, block_size, Hkv, D), dtype).normal_()
        vc = empty_huge((num_blocks, block_size, Hkv, D), dtype).normal_()
        tables = torch.randperm(num_blocks, dtype=torch.int32).view(B, blocks_per_seq).contiguous()
        caches.append((kc, vc, tables))
    return caches


def _gather(kc, vc, tables, S, dtype):
    """Contiguous [B, Hkv, S, D] copies of the paged K/V in dtype, for SDPA (on huge pages too,
    like the paged caches)."""
    pos = torch.arange(S)
    block_size = kc.shape[1]
    idx = tables.long()[:, pos // block_size]  # [B, S]

    def contiguous(cache):
        x = cache[idx, pos % block_size].transpose(1, 2)  # [B, Hkv, S, D]
        return empty_huge(x.shape, dtype).copy_(x)
    return contiguous(kc), contiguous(vc)


def _sdpa_impls(caches, S, query_fn, is_causal) -> dict:
    """SDPA in fp32 and bf16 on contiguous copies of the caches: {impl name: (fn, copies)}."""
    impls = {}
    for dtype in (torch.float32, torch.bfloat16):
        contig = []
        per_copy = 2 * caches[0][0].numel() * torch.tensor([], dtype=dtype).element_size()
        for kc, vc, tables in caches[: rotation_count(per_copy, limit=len(caches))]:
            contig.append(_gather(kc, vc, tables, S, dtype))
        q = query_fn(dtype)

        def run(i, q=q, contig=contig):
            k, v = contig[i % len(contig)]
            F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)

        impls[f"torch SDPA {str(dtype)[6:]} (contiguous K/V)"] = (run, len(contig))
    return impls


def _time_against_sdpa(ctx, rows, name, case, run_ours, ours_copies, sdpa, work) -> None:
    """Times pagedinfer and the SDPA variants in turns (time_interleaved), warming each up over all
    its copies first (they were just written; the first timed calls would otherwise also pay for
    writing their dirty lines back), and adds the rows, pagedinfer's held against the best SDPA."""
    impls = {"pagedinfer": (run_ours, ours_copies), **sdpa}
    stats = ctx.time_interleaved({impl: fn for impl, (fn, _) in impls.items()},
                                 warmups={impl: max(ctx.warmup, n) for impl, (_, n) in impls.items()})
    base_rows = [ctx.row(name, case, impl, stats[impl], **work) for impl in sdpa]
    best = min(base_rows, key=lambda r: r.median_ms)
    rows.extend([ctx.row(name, case, "pagedinfer", stats["pagedinfer"], baseline=best, **work), *base_rows])


def _decode(ctx: BenchContext, rows: list[Row], B: int, S: int) -> None:
    name = "attention"
    Hq, Hkv, D, block_size, dtype = 32, 8, 128, 16, torch.bfloat16
    if ctx.quick:
        S = max(256, S // 8)
    kv_bytes = 2 * B * S * Hkv * D * 2
    copies = rotation_count(kv_bytes, limit=16)
    caches = _paged_inputs(B, S, Hkv, D, block_size, dtype, copies)
    q = torch.randn(B, Hq, D).to(dtype)
    qsl = torch.arange(B + 1, dtype=torch.int32)
    seq_lens = torch.full((B,), S, dtype=torch.int32)
    out = torch.empty_like(q)
    case = (f"decode {B}x{S} Hq={Hq} Hkv={Hkv} D={D} bf16 "
            f"({copies} caches x {kv_bytes / 1e6:.0f} MB rotated)")
    work = dict(bytes=float(kv_bytes), limit="read_gbps")

    def query_fn(sdpa_dtype):
        return q.to(sdpa_dtype).view(B, Hq, 1, D)

    def run_ours(i):
        kc, vc, tables = caches[i % copies]
        ops.paged_attention(q, kc, vc, qsl, seq_lens, tables, out=out)

    sdpa = _sdpa_impls(caches, S, query_fn, False)
    _time_against_sdpa(ctx, rows, name, case, run_ours, copies, sdpa, work)


def _prefill(ctx: BenchContext, rows: list[Row], B: int, S: int) -> None:
    name = "attention"
    Hq, Hkv, D, block_size, dtype = 32, 8, 128, 16, torch.bfloat16
    if ctx.quick:
        S = max(64, S // 4)
    caches = _paged_inputs(B, S, Hkv, D, block_size, dtype, 1)
    q = torch.randn(B * S, Hq, D).to(dtype)
    qsl = torch.arange(0, B * S + 1, S, dtype=torch.int32)
    seq_lens = torch.full((B,), S, dtype=torch.int32)
    out = torch.empty_like(q)
    flops = 4.0 * D * Hq * B * (S * (S + 1) / 2)  # QK^T and PV over the causal pairs
    case = f"prefill {B}x{S} Hq={Hq} Hkv={Hkv} D={D} bf16 causal"
    work = dict(flops=flops, limit="bf16_gflops")

    def query_fn(sdpa_dtype):
        return q.view(B, S, Hq, D).transpose(1, 2).contiguous().to(sdpa_dtype)

    kc, vc, tables = caches[0]

    def run_ours(i):
        ops.paged_attention(q, kc, vc, qsl, seq_lens, tables, out=out)

    sdpa = _sdpa_impls(caches, S, query_fn, True)
    _time_against_sdpa(ctx, rows, name, case, run_ours, 1, sdpa, work)


@suite("attention")
def attention_suite(ctx: BenchContext) -> list[Row]:
    rows: list[Row] = []
    _decode(ctx, rows, 32, 2048)
    _decode(ctx, rows, 1, 32768)
    _prefill(ctx, rows, 4, 512)
    return rows

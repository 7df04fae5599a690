"""`pagedinfer bench cuda --device cuda`: the CUDA kernels against PyTorch's own GPU paths.

  * paged decode attention, bf16, 64 sequences x 4096 tokens, 32 query / 8 KV heads, D = 128:
    held against the measured device copy bandwidth (the K/V bytes must be read once); baseline
    torch's scaled_dot_product_attention on the same K/V laid out contiguously.
  * paged prefill, bf16, 8 x 512 tokens (the varlen path), baseline SDPA (causal).
  * INT4 / INT8 linear, N = K = 8192, group 128, bf16, M = 1 .. 256: against cuBLAS bf16
    (x @ W^T on the dequantized weight) and torch.ops.aten._weight_int4pack_mm. Weights are
    rotated through enough copies to exceed the GPU's L2.
Timing uses CUDA events around batches of launches (launch overhead amortized, no host sync per
call); the reported figure is the median over batches."""
from __future__ import annotations

import copy
import math
import statistics

import torch

import pagedinfer.ops as ops
from pagedinfer.bench.core import BenchContext, Row, Stats, suite
from pagedinfer.quant import Int4Weight, Int8Weight

NAME = "cuda"
L2_ROTATE_BYTES = 512 << 20  # rotate inputs through more than this (H100/H200 L2: 50-60 MiB)


def cuda_time(ctx: BenchContext, fn, inner: int = 20, batches: int | None = None) -> Stats:
    batches = batches or max(5, ctx.repeat)
    for i in range(3):
        fn(i)
    torch.cuda.synchronize()
    times, i = [], 0
    for _ in range(batches):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn(i)
            i += 1
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    times.sort()
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return Stats(statistics.median(times), q[0], q[-1], len(times))


def copies_for(nbytes: int) -> int:
    return max(1, min(32, math.ceil(L2_ROTATE_BYTES / max(1, nbytes))))


def attention_rows(ctx: BenchContext) -> list[Row]:
    rows = []
    dev, dt = ctx.device, torch.bfloat16
    B, S, Hq, Hkv, D, bs = (8 if ctx.quick else 64), (1024 if ctx.quick else 4096), 32, 8, 128, 16
    blocks_per_seq = S // bs
    kc = torch.randn(B * blocks_per_seq, bs, Hkv, D, device=dev, dtype=dt)
    vc = torch.randn_like(kc)
    tables = torch.randperm(B * blocks_per_seq, device=dev, dtype=torch.int32).view(B, blocks_per_seq)
    q = torch.randn(B, Hq, D, device=dev, dtype=dt)
    qsl = torch.arange(B + 1, device=dev, dtype=torch.int32)
    seq_lens = torch.full((B,), S, device=dev, dtype=torch.int32)
    out = torch.empty_like(q)
    kv_bytes = 2 * kc.numel() * 2
    case = f"decode bf16 {B}x{S} {Hq}/{Hkv} heads D={D} bs={bs}"
    # Baseline: SDPA over the same K/V gathered into contiguous [B, Hkv, S, D] (gather not timed).
    k_dense = kc[tables.long()].view(B, S, Hkv, D).transpose(1, 2).contiguous()
    v_dense = vc[tables.long()].view(B, S, Hkv, D).transpose(1, 2).contiguous()
    sdpa = cuda_time(ctx, lambda i: torch.nn.functional.scaled_dot_product_attention(
        q.view(B, Hq, 1, D), k_dense, v_dense, enable_gqa=True), inner=10)
    base = ctx.row(NAME, case, "torch SDPA (contiguous KV)", sdpa, bytes=kv_bytes, limit="copy_gbps")
    rows.append(base)
    ours = cuda_time(ctx, lambda i: ops.paged_attention(q, kc, vc, qsl, seq_lens, tables, out=out), inner=10)
    rows.append(ctx.row(NAME, case, "paged_attention (eager)", ours, bytes=kv_bytes, limit="copy_gbps",
                        baseline=base))
    # Eager calls copy the metadata to the host to check it (a sync); under CUDA graph capture, as
    # an engine's decode step runs, they do not: this is the kernels' own time.
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.paged_attention(q, kc, vc, qsl, seq_lens, tables, out=out)
    ours = cuda_time(ctx, lambda i: graph.replay(), inner=10)
    rows.append(ctx.row(NAME, case, "paged_attention (CUDA graph)", ours, bytes=kv_bytes, limit="copy_gbps",
                        baseline=base))
    del k_dense, v_dense

    P, NP = 512, 8  # prefill: NP sequences of P new tokens each
    qp = torch.randn(NP * P, Hq, D, device=dev, dtype=dt)
    qslp = torch.arange(0, NP * P + 1, P, device=dev, dtype=torch.int32)
    lens = torch.full((NP,), P, device=dev, dtype=torch.int32)
    tp = tables[:NP, : P // bs].contiguous()
    outp = torch.empty_like(qp)
    flops = 4.0 * NP * Hq * D * P * (P + 1) / 2
    kd = kc[tp.long()].view(NP, P, Hkv, D).transpose(1, 2).contiguous()
    vd = vc[tp.long()].view(NP, P, Hkv, D).transpose(1, 2).contiguous()
    qd = qp.view(NP, P, Hq, D).transpose(1, 2).contiguous()
    case = f"prefill bf16 {NP}x{P} {Hq}/{Hkv} heads D={D}"
    sdpa = cuda_time(ctx, lambda i: torch.nn.functional.scaled_dot_product_attention(
        qd, kd, vd, is_causal=True, enable_gqa=True), inner=5)
    base = ctx.row(NAME, case, "torch SDPA causal", sdpa, flops=flops, limit="bf16_gflops")
    rows.append(base)
    ours = cuda_time(ctx, lambda i: ops.paged_attention(qp, kc, vc, qslp, lens, tp, out=outp), inner=2)
    rows.append(ctx.row(NAME, case, "paged_attention (eager)", ours, flops=flops, limit="bf16_gflops",
                        baseline=base))
    return rows


def int4pack_for_torch(qw: Int4Weight, n: int, k: int, g: int, dev):
    """The same weight for aten._weight_int4pack_mm: w = (q - 8) * scale + zero, zero = min + 8 scale."""
    q = qw.unpacked().to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).to(dev), 8)
    scale = qw.scale.float()
    zero = qw.min.float() + 8 * scale
    sz = torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous().to(dev)  # [K/G, N, 2]
    return packed, sz


def linear_rows(ctx: BenchContext) -> list[Row]:
    rows = []
    dev, dt = ctx.device, torch.bfloat16
    n = k = 4096 if ctx.quick else 8192
    g = 128
    w = torch.randn(n, k) * 0.02
    q4 = Int4Weight.quantize(w, g)
    q8 = Int8Weight.quantize(w, g)
    w4 = q4.to(dev)
    w4s = [w4] + [copy.deepcopy(w4) for _ in range(copies_for(n * k // 2) - 1)]
    w8 = q8.to(dev)
    w8s = [w8] + [copy.deepcopy(w8) for _ in range(copies_for(n * k) - 1)]
    wd0 = q4.dequantize(dt).to(dev)
    wd = [wd0] + [wd0.clone() for _ in range(copies_for(n * k * 2) - 1)]
    try:
        p0, sz0 = int4pack_for_torch(q4, n, k, g, dev)
        packs = [(p0, sz0)] + [(p0.clone(), sz0.clone()) for _ in range(copies_for(n * k // 2) - 1)]
    except Exception as err:  # noqa: BLE001 -- an older/newer torch may lack or change the op
        packs = None
        print(f"bench cuda: _weight_int4pack_mm unavailable ({err}); skipped")
    for m in ([1, 16, 64] if ctx.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]):
        x = torch.randn(m, k, device=dev, dtype=dt)
        case = f"linear {m}x{n}x{k} g{g} bf16"
        flops = 2.0 * m * n * k
        dense = cuda_time(ctx, lambda i: x @ wd[i % len(wd)].t())
        base = ctx.row(NAME, case, "cuBLAS bf16", dense, bytes=n * k * 2, flops=flops, limit="copy_gbps")
        rows.append(base)
        if packs is not None:
            try:
                st = cuda_time(ctx, lambda i: torch.ops.aten._weight_int4pack_mm(
                    x, packs[i % len(packs)][0], g, packs[i % len(packs)][1]))
                rows.append(ctx.row(NAME, case, "aten _weight_int4pack_mm", st, bytes=n * k // 2,
                                    flops=flops, limit="copy_gbps", baseline=base))
            except RuntimeError as err:
                print(f"bench cuda: _weight_int4pack_mm failed at M={m} ({err}); skipped")
        st = cuda_time(ctx, lambda i: ops.int4_linear(x, w4s[i % len(w4s)]))
        rows.append(ctx.row(NAME, case, "pagedinfer int4_linear", st, bytes=n * k // 2 + n * k // g * 4,
                            flops=flops, limit="copy_gbps", baseline=base))
        st = cuda_time(ctx, lambda i: ops.int8_linear(x, w8s[i % len(w8s)]))
        rows.append(ctx.row(NAME, case, "pagedinfer int8_linear", st, bytes=n * k + n * k // g * 2,
                            flops=flops, limit="copy_gbps", baseline=base))
    return rows


@suite(NAME)
def cuda_suite(ctx: BenchContext) -> list[Row]:
    if ctx.device.type != "cuda":
        print("bench cuda: needs --device cuda; skipped")
        return []
    return attention_rows(ctx) + linear_rows(ctx)

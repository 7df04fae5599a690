"""`pagedinfer bench gemm`: weight-only INT4 / INT8 linear layers against PyTorch, same run.

Impls per case (bf16 activations x [M, K], weight [N, K], group 32):
  pagedinfer int4 / int8      pagedinfer.ops.int4_linear / int8_linear
  torch int4 (baseline)       torch.ops.aten._weight_int4pack_mm_for_cpu (its bf16 fast path;
                              weight packed by _convert_weight_to_int4pack_for_cpu)
  dense bf16 / dense fp32     torch.matmul on the dequantized weight
Every impl rotates through copies of its weights that together exceed the last-level cache, so
each call streams its weights from memory as a real model's layers do. Each copy sits on huge
pages, as pagedinfer.load_model places a model's weights (the baselines' copies too). GB/s counts
the bytes of weights read (packed bytes plus scales); GFLOP/s counts 2 M N K. Small M is held
against the machine's read bandwidth, M >= 64 against its bf16 GEMM peak.
"""
from __future__ import annotations

import torch

import pagedinfer.ops as ops
from pagedinfer.bench.core import BenchContext, Row, rotation_count, suite
from pagedinfer.memory import pack_on_huge_pages
from pagedinfer.quant import Int4Weight, Int8Weight

GROUP = 32
SQUARE = [(4096, 4096)]
# The default model (SmolLM2-135M): q/o, k/v, gate/up, down, lm head.
MODEL = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]
MS = [1, 4, 16, 64, 256]


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _copies(make, one_copy_bytes: int, limit: int = 64):
    return [make() for _ in range(rotation_count(one_copy_bytes, limit=limit))]


def _case(ctx: BenchContext, rows: list[Row], n: int, k: int, ms: list[int], dense_fp32: bool) -> None:
    name = "gemm"
    w = torch.randn(n, k) * 0.02
    w4 = Int4Weight.quantize(w, GROUP)
    w8 = Int8Weight.quantize(w, GROUP)
    w4_bytes = _nbytes(w4.qweight, w4.scale, w4.min)
    w8_bytes = _nbytes(w8.qweight, w8.scale)

    def clone_weight(src, cls):
        c = cls(*src.shape, src.group_size)
        names = [name for name, _ in src.named_buffers()]
        for name, t in zip(names, pack_on_huge_pages([getattr(src, name) for name in names])):
            setattr(c, name, t)
        return c

    def clone_tensors(*ts):
        return tuple(pack_on_huge_pages(list(ts)))

    # torch's int4 format: w = (q - 8) * scale + zero, scales_and_zeros [K/G, N, 2] bf16.
    q = w4.unpacked().to(torch.int32)
    t_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scale = w4.scale.float().t()
    t_sz = torch.stack([scale, w4.min.float().t() + 8 * scale], dim=-1).to(torch.bfloat16).contiguous()
    t_bytes = _nbytes(t_packed, t_sz)
    dense = w4.dequantize(torch.bfloat16)

    impls = {}
    copies4 = _copies(lambda: clone_weight(w4, Int4Weight), w4_bytes)
    impls["pagedinfer int4"] = (lambda x, i: ops.int4_linear(x, copies4[i % len(copies4)]), w4_bytes,
                                len(copies4))
    copies8 = _copies(lambda: clone_weight(w8, Int8Weight), w8_bytes)
    impls["pagedinfer int8"] = (lambda x, i: ops.int8_linear(x, copies8[i % len(copies8)]), w8_bytes,
                                len(copies8))
    tcopies = _copies(lambda: clone_tensors(t_packed, t_sz), t_bytes)
    impls["torch int4"] = (lambda x, i: torch.ops.aten._weight_int4pack_mm_for_cpu(
        x, tcopies[i % len(tcopies)][0], GROUP, tcopies[i % len(tcopies)][1]), t_bytes, len(tcopies))
    dcopies = _copies(lambda: clone_tensors(dense)[0], _nbytes(dense), limit=32)
    impls["dense bf16"] = (lambda x, i: torch.matmul(x, dcopies[i % len(dcopies)].t()), _nbytes(dense),
                           len(dcopies))

    for m in ms:
        x = torch.randn(m, k).to(torch.bfloat16)
        flops = 2.0 * m * n * k
        limit = "read_gbps" if m < 64 else "bf16_gflops"
        case = f"N={n} K={k} M={m} bf16 g{GROUP}"
        # Warm-up: one pass over all of an impl's copies. The copies were just written, and the
        # first impl timed after that would otherwise pay for writing their dirty lines back
        # (0.92 vs 0.55 ms for INT4 4096 x 4096 at M = 1). The impls take turns (same machine
        # state for all), each turn after such a pass (BenchContext.time_interleaved).
        stats = ctx.time_interleaved({impl: (lambda i, f=f: f(x, i)) for impl, (f, _, _) in impls.items()},
                                     warmups={impl: max(ctx.warmup, n) for impl, (_, _, n) in impls.items()})
        base = ctx.row(name, case, "torch int4", stats["torch int4"], bytes=impls["torch int4"][1],
                       flops=flops, limit=limit)
        dense_row = ctx.row(name, case, "dense bf16", stats["dense bf16"], bytes=impls["dense bf16"][1],
                            flops=flops, limit=limit, baseline=base)
        for impl in ("pagedinfer int4", "pagedinfer int8"):
            r = ctx.row(name, case, impl, stats[impl], bytes=impls[impl][1], flops=flops, limit=limit,
                        baseline=base, vs_dense_bf16=dense_row.median_ms / stats[impl].median_s / 1e3)
            rows.append(r)
        rows.extend([base, dense_row])
        if dense_fp32 and m <= 16:
            d32 = dcopies[0].float()
            f32copies = _copies(lambda: clone_tensors(d32)[0], _nbytes(d32), limit=16)
            x32 = x.float()
            st = ctx.time(lambda i: torch.matmul(x32, f32copies[i % len(f32copies)].t()),
                          warmup=max(ctx.warmup, len(f32copies)))
            rows.append(ctx.row(name, case, "dense fp32", st, bytes=_nbytes(d32), flops=flops,
                                limit=limit, baseline=base))
            del f32copies


def _prefill_case(ctx: BenchContext, rows: list[Row], n: int, k: int, m: int) -> None:
    """Prefill-sized x (the default model's 2,048-token steps): compute-bound, so W is small next
    to the work and is not rotated. From 1,024 rows the ops dequantize W to bf16 once and run
    at::mm; held against that at::mm on a resident bf16 weight (dense bf16: the ceiling of that
    path). torch's int4 op is left out: it takes ~0.2 ms per row of x here."""
    w = torch.randn(n, k) * 0.02
    w4, w8 = Int4Weight.quantize(w, GROUP), Int8Weight.quantize(w, GROUP)
    dense = w4.dequantize(torch.bfloat16)
    x = torch.randn(m, k).to(torch.bfloat16)
    impls = {"pagedinfer int4": lambda i: ops.int4_linear(x, w4),
             "pagedinfer int8": lambda i: ops.int8_linear(x, w8),
             "dense bf16": lambda i: torch.matmul(x, dense.t())}
    stats = ctx.time_interleaved(impls, warmups={impl: ctx.warmup for impl in impls})
    flops, case = 2.0 * m * n * k, f"N={n} K={k} M={m} bf16 g{GROUP} (prefill)"
    base = ctx.row("gemm", case, "dense bf16", stats["dense bf16"], flops=flops, limit="bf16_gflops")
    for impl in ("pagedinfer int4", "pagedinfer int8"):
        rows.append(ctx.row("gemm", case, impl, stats[impl], flops=flops, limit="bf16_gflops",
                            baseline=base))
    rows.append(base)


@suite("gemm")
def gemm_suite(ctx: BenchContext) -> list[Row]:
    rows: list[Row] = []
    ms = [1, 16, 64] if ctx.quick else MS
    shapes = [(1024, 1024)] if ctx.quick else SQUARE
    for n, k in shapes:
        _case(ctx, rows, n, k, ms, dense_fp32=True)
    for n, k in ([] if ctx.quick else MODEL):
        _case(ctx, rows, n, k, ms, dense_fp32=False)
    if not ctx.quick:
        _prefill_case(ctx, rows, 3072, 576, 2048)  # the default model's fused gate/up
    return rows

"""`pagedinfer bench machine`: this machine's limits, which every other figure is held against.

- read_gbps: streaming read bandwidth, the best of a bf16 GEMV and an fp32 sum over a working set
  well over the last-level cache (a GEMV streams the matrix once: the pattern of decode). On the
  CPU both read 2 MiB huge pages where Linux grants them, as the KV cache and a loaded model's
  weights do (pagedinfer.memory): 4-5 % faster reading than 4 KiB pages, so the limit is the
  higher one;
- copy_gbps: memory copy, bytes read + bytes written;
- fp32_gflops / bf16_gflops: dense GEMM 512 x 4096 x 4096 through PyTorch (oneDNN / cuBLAS).
"""
from __future__ import annotations

import platform

import torch

from pagedinfer.bench.core import BenchContext, Row, cold_working_set_bytes, last_level_cache_bytes, suite
from pagedinfer.memory import empty_huge


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _huge_copy(t: torch.Tensor) -> torch.Tensor:
    """t itself on a GPU; on the CPU a copy on huge pages where granted."""
    return t if t.device.type != "cpu" else empty_huge(t.shape, t.dtype).copy_(t)


def _measure(ctx: BenchContext) -> tuple[dict, list[Row]]:
    dev = ctx.device
    ws = cold_working_set_bytes() if not ctx.quick else 64 << 20
    rows: list[Row] = []
    name = "machine"

    # bf16 GEMV: rows x 4096 matrix of ws bytes; x fits in L1.
    cols = 4096
    weight = _huge_copy(torch.randn(ws // (2 * cols), cols, device=dev).to(torch.bfloat16))
    x = torch.randn(cols, device=dev).to(torch.bfloat16)
    gemv = ctx.time(lambda i: torch.mv(weight, x), repeat=max(5, ctx.repeat // 2))
    rows.append(ctx.row(name, f"bf16 GEMV {weight.shape[0]}x{cols}", "torch.mv", gemv,
                        bytes=weight.numel() * 2, limit_key="read_gbps"))
    del weight
    flat = _huge_copy(torch.ones(ws // 4, device=dev))
    total = ctx.time(lambda i: flat.sum(), repeat=max(5, ctx.repeat // 2))
    rows.append(ctx.row(name, f"fp32 sum {ws >> 20} MiB", "torch.sum", total, bytes=flat.numel() * 4,
                        limit_key="read_gbps"))
    dst = _huge_copy(torch.empty_like(flat))
    copy = ctx.time(lambda i: dst.copy_(flat), repeat=max(5, ctx.repeat // 2))
    rows.append(ctx.row(name, f"copy {ws >> 20} MiB", "Tensor.copy_", copy, bytes=2 * flat.numel() * 4,
                        limit_key="copy_gbps"))
    del flat, dst

    m, n, k = (512, 4096, 4096) if not ctx.quick else (128, 1024, 1024)
    limits = {}
    for dtype, key in ((torch.float32, "fp32_gflops"), (torch.bfloat16, "bf16_gflops")):
        a = torch.randn(m, k, device=dev, dtype=dtype)
        b = torch.randn(k, n, device=dev, dtype=dtype)
        stats = ctx.time(lambda i: a @ b, repeat=max(5, ctx.repeat // 2))
        rows.append(ctx.row(name, f"{str(dtype)[6:]} GEMM {m}x{n}x{k}", "torch.matmul", stats,
                            flops=2.0 * m * n * k, limit_key=key))
        limits[key] = rows[-1].gflops
    limits["read_gbps"] = max(rows[0].gbps, rows[1].gbps)
    limits["copy_gbps"] = rows[2].gbps
    limits.update(
        device=str(dev),
        cpu=_cpu_name(),
        threads=torch.get_num_threads(),
        llc_bytes=last_level_cache_bytes(),
        working_set_bytes=ws,
    )
    if dev.type == "cuda":
        limits["gpu"] = torch.cuda.get_device_name(dev)
    return limits, rows


def measure_machine(ctx: BenchContext) -> dict:
    limits, _ = _measure(ctx)
    return limits


@suite("machine")
def machine_suite(ctx: BenchContext) -> list[Row]:
    limits, rows = _measure(ctx)
    ctx._machine = limits
    for r in rows:  # each measurement against the limit it helps define
        r.limit_name = r.extra.pop("limit_key")
        value = r.gflops if r.limit_name.endswith("gflops") else r.gbps
        r.pct_of_limit = 100.0 * value / limits[r.limit_name]
    return rows

"""`pagedinfer bench cache`: the KV-cache ops against plain PyTorch, in the same run.

Byte counts are what must cross the memory bus: each copied byte is read once and written once.
"""
from __future__ import annotations

import torch

import pagedinfer.ops as ops
from pagedinfer.bench.core import BenchContext, Row, cold_working_set_bytes, rotation_count, suite


def _reshape_and_cache(ctx: BenchContext, rows: list[Row], dtype: torch.dtype) -> None:
    name = "cache"
    T, H, D, block_size = (8192, 8, 128, 16) if not ctx.quick else (1024, 8, 128, 16)
    elem = torch.tensor([], dtype=dtype).element_size()
    row_bytes = H * D * elem
    # Each of K and V gets a cache of half the cold working set, so the scattered slots miss.
    cold = cold_working_set_bytes() if not ctx.quick else 32 << 20
    num_blocks = max(T // block_size * 2, cold // 2 // (block_size * row_bytes))
    dev = ctx.device
    key_cache = torch.zeros(num_blocks, block_size, H, D, dtype=dtype, device=dev)
    value_cache = torch.zeros_like(key_cache)
    n_inputs = rotation_count(2 * T * row_bytes, limit=8)
    keys = [torch.randn(T, H, D, device=dev).to(dtype) for _ in range(n_inputs)]
    values = [torch.randn(T, H, D, device=dev).to(dtype) for _ in range(n_inputs)]
    # Scattered slots: random distinct blocks, each filled in order (the engine's pattern).
    n_slot_sets = 4
    slot_sets = []
    for _ in range(n_slot_sets):
        blocks = torch.randperm(num_blocks, device=dev)[: T // block_size]
        slots = (blocks[:, None] * block_size + torch.arange(block_size, device=dev)).reshape(-1)
        slot_sets.append(slots)
    flat_k = key_cache.view(-1, H, D)
    flat_v = value_cache.view(-1, H, D)
    moved = 2.0 * 2 * T * row_bytes  # K and V, each read once and written once
    case = f"reshape_and_cache T={T} Hkv={H} D={D} {str(dtype)[6:]}"

    def run_ours(i):
        ops.reshape_and_cache(keys[i % n_inputs], values[i % n_inputs], key_cache, value_cache,
                              slot_sets[i % n_slot_sets])

    def run_index_copy(i):
        flat_k.index_copy_(0, slot_sets[i % n_slot_sets], keys[i % n_inputs])
        flat_v.index_copy_(0, slot_sets[i % n_slot_sets], values[i % n_inputs])

    def run_index_put(i):
        flat_k[slot_sets[i % n_slot_sets]] = keys[i % n_inputs]
        flat_v[slot_sets[i % n_slot_sets]] = values[i % n_inputs]

    base_rows = []
    for impl, fn in (("torch index_copy_", run_index_copy), ("torch advanced indexing", run_index_put)):
        base_rows.append(ctx.row(name, case, impl, ctx.time(fn), bytes=moved, limit="copy_gbps"))
    best = min(base_rows, key=lambda r: r.median_ms)
    ours = ctx.row(name, case, "pagedinfer", ctx.time(run_ours), bytes=moved, limit="copy_gbps",
                   baseline=best)
    rows.extend([ours, *base_rows])


def _copy_blocks(ctx: BenchContext, rows: list[Row], dtype: torch.dtype) -> None:
    name = "cache"
    L, P, H, D, block_size = (24, 256, 8, 128, 16) if not ctx.quick else (4, 64, 8, 128, 16)
    elem = torch.tensor([], dtype=dtype).element_size()
    block_bytes = block_size * H * D * elem
    dev = ctx.device
    # Per layer cache sized so that all layers together exceed the last-level cache.
    cold = cold_working_set_bytes() if not ctx.quick else 32 << 20
    num_blocks = max(4 * P, cold // (2 * L * block_bytes))
    key_caches = [torch.zeros(num_blocks, block_size, H, D, dtype=dtype, device=dev) for _ in range(L)]
    value_caches = [torch.zeros_like(c) for c in key_caches]
    mappings = []
    for _ in range(4):
        perm = torch.randperm(num_blocks)[: 2 * P]
        mappings.append(torch.stack([perm[:P], perm[P:]], dim=1).contiguous())
    mappings_dev = [m.to(dev) for m in mappings]
    moved = 2.0 * 2 * L * P * block_bytes
    case = f"copy_blocks L={L} P={P} block={block_size}x{H}x{D} {str(dtype)[6:]}"

    def run_ours(i):
        ops.copy_blocks(key_caches, value_caches, mappings[i % 4])

    def run_torch(i):
        m = mappings_dev[i % 4]
        src, dst = m[:, 0], m[:, 1]
        for kc, vc in zip(key_caches, value_caches):
            kc.index_copy_(0, dst, kc.index_select(0, src))
            vc.index_copy_(0, dst, vc.index_select(0, src))

    base = ctx.row(name, case, "torch index_select + index_copy_", ctx.time(run_torch),
                   bytes=moved, limit="copy_gbps")
    ours = ctx.row(name, case, "pagedinfer", ctx.time(run_ours), bytes=moved, limit="copy_gbps",
                   baseline=base)
    rows.extend([ours, base])


@suite("cache")
def cache_suite(ctx: BenchContext) -> list[Row]:
    rows: list[Row] = []
    for dtype in (torch.bfloat16, torch.float32):
        _reshape_and_cache(ctx, rows, dtype)
    _copy_blocks(ctx, rows, torch.bfloat16)
    return rows

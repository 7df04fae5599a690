"""`pagedinfer demo`: a short tour of the ops on a paged KV cache (the main job until a model is
loaded by default): three sequences write their K/V into scattered blocks, one shares a prefix
block with another and forks it copy-on-write, and a block is offloaded to a second cache."""
from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

import pagedinfer
import pagedinfer.ops as ops


def run_demo() -> None:
    console = Console()
    info = pagedinfer.build_info()
    console.print(f"[bold]pagedinfer {info['version']}[/] (torch {info['torch']}); backends "
                  f"{info['backends']}; CPU ISA {info['cpu_isa_active']} ({info['cpu_features']})")
    num_blocks, block_size, heads, head_dim = 12, 4, 2, 8
    key_cache = torch.zeros(num_blocks, block_size, heads, head_dim)
    value_cache = torch.zeros_like(key_cache)
    free = list(torch.randperm(num_blocks).tolist())
    lengths = {"a": 6, "b": 3, "c": 9}
    tables = {}
    for name, length in lengths.items():
        blocks = [free.pop() for _ in range((length + block_size - 1) // block_size)]
        tables[name] = blocks
        slots = torch.tensor([blocks[p // block_size] * block_size + p % block_size for p in range(length)])
        k = torch.full((length, heads, head_dim), float(ord(name)))
        ops.reshape_and_cache(k, -k, key_cache, value_cache, slots)

    # Sequence "d" shares "a"'s first block (a common prefix), then forks it before writing.
    fork = free.pop()
    ops.copy_blocks([key_cache], [value_cache], torch.tensor([[tables["a"][0], fork]]))
    tables["d"] = [fork]
    assert torch.equal(key_cache[fork], key_cache[tables["a"][0]])

    # Offload "c"'s blocks to a second (host) cache and back.
    host = torch.zeros(len(tables["c"]), block_size, heads, head_dim)
    mapping = torch.tensor([[b, i] for i, b in enumerate(tables["c"])])
    ops.swap_blocks(key_cache, host, mapping)
    assert torch.equal(host[0], key_cache[tables["c"][0]])

    table = Table(title="paged KV cache after the demo")
    table.add_column("sequence")
    table.add_column("block table")
    table.add_column("tokens")
    for name, blocks in tables.items():
        table.add_row(name, str(blocks), str(lengths.get(name, block_size)))
    console.print(table)
    used = sum(len(b) for b in tables.values())
    console.print(f"{used} of {num_blocks} blocks in use; every write, fork and offload checked.")

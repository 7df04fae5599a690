"""Prints bench rows as a rich table and writes them as JSON."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pagedinfer.bench.core import Row, rows_to_json


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def print_rows(rows: list[Row], machine: dict | None, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 150))
    if machine:
        console.print(
            f"[bold]machine[/]: {machine.get('cpu', '?')} on {machine.get('device')}, "
            f"{machine.get('threads')} threads; read {machine['read_gbps']:.1f} GB/s, "
            f"copy {machine['copy_gbps']:.1f} GB/s, fp32 {machine['fp32_gflops']:.0f} GFLOP/s, "
            f"bf16 {machine['bf16_gflops']:.0f} GFLOP/s"
        )
    by_suite: dict[str, list[Row]] = {}
    for r in rows:
        by_suite.setdefault(r.suite, []).append(r)
    for name, suite_rows in by_suite.items():
        table = Table(title=f"pagedinfer bench {name}", show_lines=False)
        for col, justify in (("case", "left"), ("impl", "left"), ("median ms", "right"),
                             ("± %", "right"), ("GB/s", "right"), ("GFLOP/s", "right"),
                             ("% of limit", "right"), ("vs baseline", "right")):
            table.add_column(col, justify=justify)
        for r in suite_rows:
            limit = f"{r.pct_of_limit:.0f}% {r.limit_name.replace('_', ' ')}" if r.pct_of_limit is not None else ""
            vs = f"{r.speedup_vs_baseline:.2f}x {r.baseline}" if r.speedup_vs_baseline is not None else ""
            style = "bold" if r.impl.startswith("pagedinfer") else None
            table.add_row(r.case, r.impl, _fmt(r.median_ms, ".3f"), _fmt(r.spread_pct, ".0f"),
                          _fmt(r.gbps, ".1f"), _fmt(r.gflops, ".1f"), limit, vs, style=style)
        console.print(table)
    if len(by_suite) > 1:
        print_summary(rows, console)


def print_summary(rows: list[Row], console: Console) -> None:
    """One line per pagedinfer case: its share of the machine limit and its ratio to baseline."""
    table = Table(title="summary: pagedinfer against the machine and against PyTorch")
    for col in ("suite", "case", "% of limit", "limit", "vs baseline"):
        table.add_column(col, justify="right" if col in ("% of limit", "vs baseline") else "left")
    for r in rows:
        if not r.impl.startswith("pagedinfer"):
            continue
        table.add_row(r.suite, r.case, _fmt(r.pct_of_limit, ".0f"), r.limit_name or "",
                      f"{r.speedup_vs_baseline:.2f}x {r.baseline}" if r.speedup_vs_baseline else "")
    console.print(table)


def write_json(path: str | Path, rows: list[Row], machine: dict | None, argv: list[str]) -> None:
    import torch

    import pagedinfer

    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "pagedinfer " + " ".join(argv),
        "machine": machine,
        "build": pagedinfer.build_info(),
        "torch": torch.__version__,
        "rows": rows_to_json(rows),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2))

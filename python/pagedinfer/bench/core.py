"""The microbenchmark framework behind `pagedinfer bench`.

A suite is a function registered with @suite("name") that takes a BenchContext and returns
Rows. Each Row is one implementation of one case: its time (median of repeated runs after
warm-up, with the 10th-90th percentile spread), the work it did (bytes moved, FLOPs), and from
those its throughput, the fraction of the machine's limit (measured in the same run by
`machine.py`) and its ratio against the case's baseline row.

Adding a benchmark for a new op: write a function that builds inputs, call ctx.time(fn, ...)
for the op and for its PyTorch baseline, and return ctx.row(...) for each.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

SUITES: dict[str, Callable[["BenchContext"], list["Row"]]] = {}


def suite(name: str):
    """Registers a benchmark suite under `pagedinfer bench NAME`."""

    def register(fn):
        SUITES[name] = fn
        return fn

    return register


@dataclass
class Stats:
    median_s: float
    p10_s: float
    p90_s: float
    runs: int

    @property
    def spread_pct(self) -> float:
        """Half the 10-90 percentile range, as a percentage of the median."""
        return 50.0 * (self.p90_s - self.p10_s) / self.median_s if self.median_s > 0 else 0.0


@dataclass
class Row:
    suite: str
    case: str
    impl: str
    median_ms: float
    spread_pct: float
    bytes: float = 0.0  # bytes that must cross the memory bus (the roofline's denominator)
    flops: float = 0.0
    gbps: float | None = None
    gflops: float | None = None
    limit_name: str | None = None  # which machine limit this op is held against
    pct_of_limit: float | None = None
    baseline: str | None = None
    speedup_vs_baseline: float | None = None  # baseline time / this time (>1: faster)
    extra: dict = field(default_factory=dict)


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (sysfs), or 32 MiB when it cannot be read."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            path = os.path.join(base, entry, "size")
            if os.path.exists(path):
                text = open(path).read().strip().upper()
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
                value = int(text[:-1]) if text[-1] in "KMG" else int(text)
                best = max(best, value * mult)
    except OSError:
        pass
    return best or (32 << 20)


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def cold_working_set_bytes() -> int:
    """A working-set size well over the last-level cache (2x, at least 256 MiB), capped at an
    eighth of the memory so a benchmark never swaps the machine."""
    return int(min(max(2 * last_level_cache_bytes(), 256 << 20), total_memory_bytes() // 8))


def rotation_count(bytes_per_copy: int, limit: int = 64) -> int:
    """How many copies of an input to rotate through so that together they exceed the LLC."""
    return max(1, min(limit, math.ceil(cold_working_set_bytes() / max(1, bytes_per_copy))))


def _stats(times: list[float]) -> Stats:
    times = sorted(times)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return Stats(statistics.median(times), q[0], q[-1], len(times))


class BenchContext:
    """Settings and shared state for one `pagedinfer bench` run."""

    def __init__(self, device: str = "cpu", repeat: int = 10, warmup: int = 2,
                 quick: bool = False, machine: dict | None = None):
        self.device = torch.device(device)
        self.repeat = repeat
        self.warmup = warmup
        self.quick = quick
        self._machine = machine

    @property
    def machine(self) -> dict:
        """The machine's limits, measured once per run (see machine.py)."""
        if self._machine is None:
            from pagedinfer.bench.machine import measure_machine

            self._machine = measure_machine(self)
        return self._machine

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _runs(self, fn: Callable[[int], object], first: int, warmup: int, repeat: int,
              min_time_s: float) -> list[float]:
        """fn(first), fn(first + 1), ...: warmup untimed runs, then the times of at least repeat
        runs and min_time_s of them."""
        for i in range(first, first + warmup):
            fn(i)
        self.sync()
        times = []
        start = time.perf_counter()
        i = first + warmup
        while len(times) < repeat or (time.perf_counter() - start) < min_time_s:
            t0 = time.perf_counter()
            fn(i)
            self.sync()
            times.append(time.perf_counter() - t0)
            i += 1
        return times

    def time(self, fn: Callable[[int], object], repeat: int | None = None,
             warmup: int | None = None, min_time_s: float = 0.0) -> Stats:
        """Times fn(i) for i = 0, 1, ...; fn rotates through its own inputs by i. Returns the
        median and 10/90th percentiles of repeated runs after warm-up."""
        warmup = self.warmup if warmup is None else warmup
        return _stats(self._runs(fn, 0, warmup, repeat or self.repeat, min_time_s))

    def time_interleaved(self, fns: dict[str, Callable[[int], object]], warmups: dict[str, int],
                         rounds: int = 3, min_time_s: float = 0.03) -> dict[str, Stats]:
        """Times several impls of one case in turns (A B C, A B C, ...), each turn at least
        `repeat` runs and min_time_s, and pools each impl's runs. On a machine whose memory
        bandwidth drifts from minute to minute (a shared VM), the impls then see the same
        conditions, so their ratio holds even when the absolute figures move. Every turn starts
        with warmups[impl] untimed runs (a pass over the impl's rotated copies): read bandwidth
        here falls as the set of recently read memory grows (a sum streams 27.6 GB/s from
        0.25 GiB, 23.7 from 0.96, 20.4 from 3.8), so each impl is timed once its own data, and
        not the other impls', is what the machine last read."""
        times: dict[str, list[float]] = {name: [] for name in fns}
        next_i = {name: 0 for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                turn = self._runs(fn, next_i[name], warmups[name], self.repeat, min_time_s)
                times[name] += turn
                next_i[name] += warmups[name] + len(turn)
        return {name: _stats(t) for name, t in times.items()}

    def row(self, suite_name: str, case: str, impl: str, stats: Stats, *, bytes: float = 0.0,
            flops: float = 0.0, limit: str | None = None, baseline: Row | None = None,
            **extra) -> Row:
        """Builds a Row; `limit` names a key of self.machine ("read_gbps", "copy_gbps",
        "bf16_gflops", "fp32_gflops") that the op is held against."""
        seconds = stats.median_s
        gbps = bytes / seconds / 1e9 if bytes and seconds > 0 else None
        gflops = flops / seconds / 1e9 if flops and seconds > 0 else None
        pct = None
        if limit is not None:
            ceiling = self.machine[limit]
            value = gflops if limit.endswith("gflops") else gbps
            pct = 100.0 * value / ceiling if value is not None and ceiling else None
        speedup = baseline.median_ms / (seconds * 1e3) if baseline is not None else None
        return Row(suite_name, case, impl, seconds * 1e3, stats.spread_pct, bytes, flops, gbps,
                   gflops, limit, pct, baseline.impl if baseline is not None else None, speedup,
                   extra)


def rows_to_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]

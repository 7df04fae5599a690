"""The bench CLI end to end on tiny cases: the table prints, the JSON has the promised shape."""
from __future__ import annotations

import json

import pytest

from pagedinfer.bench.core import BenchContext, rotation_count, cold_working_set_bytes, last_level_cache_bytes
from pagedinfer.cli import main


def test_bench_machine_and_cache_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "machine", "cache", "--quick", "--repeat", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pagedinfer bench cache" in printed and "reshape_and_cache" in printed
    doc = json.loads(out.read_text())
    machine = doc["machine"]
    for key in ("read_gbps", "copy_gbps", "fp32_gflops", "bf16_gflops", "llc_bytes", "threads"):
        assert machine[key] > 0, key
    rows = doc["rows"]
    suites = {r["suite"] for r in rows}
    assert suites == {"machine", "cache"}
    ours = [r for r in rows if r["suite"] == "cache" and r["impl"] == "pagedinfer"]
    assert len(ours) == 3
    for r in ours:
        assert r["median_ms"] > 0 and r["gbps"] > 0 and r["pct_of_limit"] > 0
        assert r["baseline"] and r["speedup_vs_baseline"] > 0
    assert "cpu_features" in doc["build"]


def test_bench_unknown_suite(capsys):
    assert main(["bench", "nonsense"]) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_timer_statistics():
    ctx = BenchContext(repeat=7, warmup=1)
    calls = []
    stats = ctx.time(lambda i: calls.append(i))
    assert len(calls) == 8 and calls[0] == 0  # one warm-up, then seven timed runs
    assert stats.runs == 7 and stats.p10_s <= stats.median_s <= stats.p90_s


def test_working_set_exceeds_last_level_cache():
    from pagedinfer.bench.core import total_memory_bytes

    assert cold_working_set_bytes() >= min(2 * last_level_cache_bytes(), total_memory_bytes() // 8)
    assert rotation_count(1 << 20) * (1 << 20) >= min(cold_working_set_bytes(), 64 << 20)
    assert rotation_count(1 << 40) == 1

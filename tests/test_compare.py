"""The comparison harness on a synthetic system: JSON schema, output checks, plots."""
from __future__ import annotations

import json

from pagedinfer.bench.compare import check_outputs, main
from pagedinfer.bench.plots import roofline


def test_compare_synthetic_run(tmp_path):
    assert main(["--systems", "synthetic", "--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert {"date", "command", "machine", "spec", "correctness", "results"} <= set(doc)
    for key in ("read_gbps", "copy_gbps", "fp32_gflops", "bf16_gflops"):
        assert doc["machine"][key] > 0
    r = doc["results"]["synthetic"]
    assert r["decode_1"]["tok_s"] > 0 and r["prefill"]["tok_s"] > 0
    assert [e["concurrency"] for e in r["closed_loop"]] == doc["spec"]["closed_loop"]["concurrency"]
    png = tmp_path / "throughput_vs_concurrency.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_compare_skips_unknown_system(tmp_path):
    assert main(["--systems", "synthetic,nonexistent", "--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert "unknown system" in doc["results"]["nonexistent"]["skipped"]


def test_check_outputs_counts_divergence():
    results = {
        "transformers": {"tokens": {"decode": [[1, 2, 3, 4]], "closed_2": [[5, 6], [7, 8]]}},
        "pagedinfer": {"tokens": {"decode": [[1, 2, 9, 4]], "closed_2": [[5, 6], [7]]}},
        "llama.cpp": {"skipped": "not installed"},
    }
    report = check_outputs(results)
    assert report["reference"] == "transformers"
    per = report["systems"]["pagedinfer"]
    assert per["decode"] == {"same_length": True, "requests_identical": 0, "requests": 1,
                             "first_divergence": [2], "differing_tokens": 1}
    assert per["closed_2"]["same_length"] is False
    assert "llama.cpp" not in report["systems"]


def test_roofline_plot(tmp_path):
    machine = {"read_gbps": 30.0, "copy_gbps": 25.0, "fp32_gflops": 300.0, "bf16_gflops": 2000.0, "threads": 2}
    rows = [
        {"suite": "gemm", "case": "int4 M=1", "impl": "pagedinfer", "flops": 2 * 4096 * 4096,
         "bytes": 4096 * 4096 / 2, "gflops": 100.0, "gbps": 25.0},
        {"suite": "gemm", "case": "int4 M=1", "impl": "torch", "flops": 2 * 4096 * 4096,
         "bytes": 4096 * 4096 / 2, "gflops": 50.0, "gbps": 12.5},
        {"suite": "cache", "case": "copy_blocks", "impl": "pagedinfer", "flops": 0, "bytes": 1e6,
         "gflops": None, "gbps": 20.0},
    ]
    path = roofline(rows, machine, tmp_path / "roof.png")
    assert path.stat().st_size > 10_000

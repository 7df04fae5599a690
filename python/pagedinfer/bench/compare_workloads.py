"""Workloads, worker entry point, report and plots of `pagedinfer bench compare` (compare.py).

Worker: `python -m pagedinfer.bench.compare_workloads SYSTEM SPEC.json OUT.json`.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

# Prompt text: plain prose, tokenized once; prompts are windows at different offsets.
CORPUS = (
    "The lighthouse keeper kept a ledger of every ship that passed the point, noting the hour, the "
    "direction of the wind, the colour of the sails and anything unusual about the way the vessel "
    "rode the swell. Over forty years the ledger grew to eleven volumes. Historians later used it "
    "to reconstruct the coastal trade of the region, the arrival of steam, the decline of the "
    "fishing fleet and the storms that reshaped the harbour mouth. The keeper himself wrote little "
    "about his own life: a line about his daughter's wedding, another about the winter the lamp "
    "froze, a third about a whale that stranded on the northern beach and was cut up by the village "
    "over three days. Engineers who studied the tower in the following century found that its "
    "foundations had been laid on a shelf of granite that ran far under the sea, which explained "
    "why it had survived waves that destroyed the breakwater twice. Today the light is automatic, "
    "the ledger sits in a museum, and visitors climb the spiral stair to look out at the same "
    "water the keeper watched, counting the container ships that cross the horizon each hour. "
)


def make_spec(model_dir, gguf_file, threads: int, quick: bool, synthetic: bool = False) -> dict:
    if synthetic:
        corpus = list(range(1, 4000))
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
        corpus = tok(CORPUS * 4, add_special_tokens=False)["input_ids"]
    q = quick
    spec = {
        "model_dir": model_dir, "gguf_file": gguf_file, "threads": threads, "quick": quick,
        "decode": {"prompt": 32, "tokens": 16 if q else 128},
        "prefill": {"prompt": 128 if q else 512, "repeats": 2 if q else 3},
        "closed_loop": {"concurrency": [1, 4] if q else [1, 8, 32, 64], "prompt": 32 if q else 128,
                        "tokens": 8 if q else 128},
        "online": {"rates": [4.0, 8.0] if q else [2.0, 4.0, 8.0], "requests": 6 if q else 32,
                   "prompt": 64 if q else 128, "tokens": 8 if q else 64,
                   "slo_ttft_s": 1.0, "slo_itl_s": 0.1},
        "shared_prefix": {"system": 128 if q else 384, "user": 16 if q else 32,
                          "requests": 4 if q else 16, "tokens": 8 if q else 32},
    }
    need = 4096 + 64 * 128
    while len(corpus) < need:
        corpus = corpus + corpus
    spec["corpus"] = corpus[:need]
    return spec


def window(spec: dict, index: int, length: int) -> list[int]:
    """The index-th prompt of a given length: a window starting 97 * index tokens in."""
    start = (97 * index) % (len(spec["corpus"]) - length)
    return spec["corpus"][start:start + length]


def measure_machine_quick(quick: bool) -> dict:
    from pagedinfer.bench.core import BenchContext

    return BenchContext(repeat=3 if quick else 6, quick=quick).machine


# ---- the worker ---------------------------------------------------------------------------------

def build_system(name: str, spec: dict):
    from pagedinfer.bench import compare_systems as cs

    path = f"{spec['model_dir']}/{spec['gguf_file']}" if spec["model_dir"] else None
    if name == "pagedinfer":
        return cs.PagedinferSystem(path, spec["threads"])
    if name == "transformers":
        return cs.TransformersSystem(spec["model_dir"], spec["gguf_file"], spec["threads"])
    if name == "llama.cpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise SkipSystem(f"llama-cpp-python is not installed; to include it: {cs.LlamaCppSystem.INSTALL}")
        return cs.LlamaCppSystem(path, spec["threads"])
    if name == "synthetic":
        return cs.SyntheticSystem()
    raise SkipSystem(f"unknown system {name!r}")


class SkipSystem(Exception):
    pass


def run_workloads(system, spec: dict) -> dict:
    res, tokens = {}, {}
    system.generate([window(spec, 0, 16)], 4)  # warm-up: one-time costs out of every figure

    d = spec["decode"]
    prompt = window(spec, 1, d["prompt"])
    _, t1 = system.generate([prompt], 1)
    out, tn = system.generate([prompt], d["tokens"])
    tokens["decode"] = out
    res["decode_1"] = {"tok_s": (d["tokens"] - 1) / max(1e-9, tn["total_s"] - t1["total_s"]),
                       "total_s": tn["total_s"]}

    p = spec["prefill"]
    times = [system.generate([window(spec, 2 + 50 * i, p["prompt"])], 1)[1]["total_s"]
             for i in range(p["repeats"])]  # a new prompt each time: no cache may serve it
    res["prefill"] = {"prompt": p["prompt"], "ttft_s": statistics.median(times),
                      "tok_s": p["prompt"] / statistics.median(times)}

    c = spec["closed_loop"]
    res["closed_loop"] = []
    for n in c["concurrency"]:
        prompts = [window(spec, 10 + i, c["prompt"]) for i in range(n)]
        out, t = system.generate(prompts, c["tokens"])
        tokens[f"closed_{n}"] = out
        entry = {"concurrency": n, "total_s": t["total_s"], "tok_s": n * c["tokens"] / t["total_s"]}
        if t.get("ttft_s"):
            entry["ttft_mean_s"] = statistics.mean(t["ttft_s"])
        res["closed_loop"].append(entry)
    if hasattr(system, "extra_workloads"):
        res.update(system.extra_workloads(spec, window))
    res["tokens"] = tokens
    return res


def worker_main(name: str, spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        system = build_system(name, spec)
    except SkipSystem as e:
        Path(out_path).write_text(json.dumps({"skipped": str(e)}))
        return 0
    start = time.perf_counter()
    result = run_workloads(system, spec)
    result["wall_s"] = time.perf_counter() - start
    system.close()
    Path(out_path).write_text(json.dumps(result))
    return 0


# ---- report and plots ---------------------------------------------------------------------------

def print_report(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    systems = [s for s, r in doc["results"].items() if "skipped" not in r]
    table = Table(title=f"pagedinfer bench compare ({doc['machine'].get('threads')} threads, {doc['date']})")
    table.add_column("workload")
    for s in systems:
        table.add_column(s, justify="right")

    def add(label, get):
        cells = []
        for s in systems:
            try:
                cells.append(get(doc["results"][s]))
            except (KeyError, IndexError, TypeError):
                cells.append("")
        table.add_row(label, *cells)

    add("decode, 1 request (tok/s)", lambda r: f"{r['decode_1']['tok_s']:.1f}")
    add(f"prefill {doc['spec']['prefill']['prompt']} tokens (tok/s)", lambda r: f"{r['prefill']['tok_s']:.0f}")
    add("TTFT of that prompt (ms)", lambda r: f"{1e3 * r['prefill']['ttft_s']:.1f}")
    for i, n in enumerate(doc["spec"]["closed_loop"]["concurrency"]):
        add(f"{n} concurrent requests (tok/s)", lambda r, i=i: f"{r['closed_loop'][i]['tok_s']:.1f}")
    console.print(table)
    for s, r in doc["results"].items():
        for o in r.get("online", []):
            console.print(f"{s} online at {o['rate']:g} req/s: TTFT p50/p90/p99 "
                          f"{1e3 * o['ttft_p50_s']:.0f}/{1e3 * o['ttft_p90_s']:.0f}/{1e3 * o['ttft_p99_s']:.0f} ms, "
                          f"ITL p50/p90/p99 {1e3 * o['itl_p50_s']:.1f}/{1e3 * o['itl_p90_s']:.1f}/"
                          f"{1e3 * o['itl_p99_s']:.1f} ms, goodput {o['goodput_req_s']:.2f} req/s "
                          f"({o['slo_met']}/{o['requests']} met the objectives)")
        if "shared_prefix" in r:
            sp = r["shared_prefix"]
            console.print(f"{s} shared system prompt: prefix caching on {sp['on']['total_s']:.2f} s "
                          f"(TTFT {1e3 * sp['on']['ttft_mean_s']:.0f} ms, {sp['on']['cached_prompt_tokens']}"
                          f"/{sp['on']['prompt_tokens']} prompt tokens from cache) vs off "
                          f"{sp['off']['total_s']:.2f} s (TTFT {1e3 * sp['off']['ttft_mean_s']:.0f} ms): "
                          f"{sp['speedup']:.2f}x")
    for s, r in doc["results"].items():
        if "skipped" in r:
            console.print(f"[yellow]{s} skipped[/]: {r['skipped']}")
    corr = doc.get("correctness") or {}
    for s, per in corr.get("systems", {}).items():
        parts = [f"{k}: {v['requests_identical']}/{v['requests']} identical"
                 + (f" (others first differ at token {sorted(v['first_divergence'])})" if v["first_divergence"] else "")
                 + ("" if v["same_length"] else " (LENGTHS DIFFER)") for k, v in per.items()]
        console.print(f"greedy outputs of {s} vs {corr['reference']}: " + "; ".join(parts))


def plot_all(doc: dict, out: Path, ops_json: str | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s, r in doc["results"].items():
        if "skipped" in r:
            continue
        xs = [e["concurrency"] for e in r["closed_loop"]]
        ax.plot(xs, [e["tok_s"] for e in r["closed_loop"]], marker="o", label=s)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("generated tokens / s")
    ax.set_title("throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out / "throughput_vs_concurrency.png")
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)

    online = {s: r["online"] for s, r in doc["results"].items() if "online" in r}
    if online:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for s, runs in online.items():
            rates = [o["rate"] for o in runs]
            for key, style in (("ttft_p50_s", "-o"), ("ttft_p99_s", "--o"), ("itl_p50_s", "-s"), ("itl_p99_s", "--s")):
                ax.plot(rates, [1e3 * o[key] for o in runs], style, label=f"{s} {key[:-2]}")
        ax.set_yscale("log")
        ax.set_xlabel("request rate (requests / s, Poisson)")
        ax.set_ylabel("latency (ms)")
        ax.set_title("latency percentiles vs request rate")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "latency_vs_rate.png")
        fig.savefig(paths[-1], dpi=130)
        plt.close(fig)

    if ops_json:
        from pagedinfer.bench.plots import roofline

        ops = json.loads(Path(ops_json).read_text())
        paths.append(roofline(ops["rows"], ops["machine"], out / "roofline.png"))
    return paths


if __name__ == "__main__":
    sys.exit(worker_main(*sys.argv[1:4]))

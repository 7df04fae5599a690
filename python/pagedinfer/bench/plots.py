"""Pictures of bench results (matplotlib, written as PNG): the roofline chart that places every
op against the machine's bandwidth and compute ceilings."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def roofline(rows: list[dict], machine: dict, path: str | Path, title: str = "pagedinfer ops") -> Path:
    """Left: ops with both FLOPs and bytes at (FLOPs/byte, GFLOP/s) under the roofs
    min(peak, intensity x bandwidth) for fp32 and bf16. Right: pure data-movement ops as GB/s
    against the read and copy bandwidth ceilings. Only pagedinfer's own rows are plotted in
    colour; baselines are grey."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    bandwidth = machine["read_gbps"]
    xs = [2.0**e for e in range(-4, 12)]
    for peak_key, style in (("bf16_gflops", "-"), ("fp32_gflops", "--")):
        peak = machine[peak_key]
        ax.plot(xs, [min(peak, x * bandwidth) for x in xs], style, color="black", lw=1.2,
                label=f"roof: {peak_key.split('_')[0]} {peak:.0f} GFLOP/s, {bandwidth:.0f} GB/s")
    compute_rows = [r for r in rows if r.get("flops") and r.get("bytes") and r.get("gflops")]
    for r in compute_rows:
        ours = r["impl"] == "pagedinfer"
        x = r["flops"] / r["bytes"]
        ax.scatter([x], [r["gflops"]], s=40 if ours else 18, color=None if ours else "0.6",
                   zorder=3, label=f"{r['case']}" if ours else None)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte of memory traffic)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"{title}: roofline ({machine.get('threads', '?')} threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")

    move_rows = [r for r in rows if r.get("gbps") and not r.get("flops") and r["suite"] != "machine"]
    labels = [f"{r['case'][:38]}\n{r['impl'][:28]}" for r in move_rows]
    colors = ["tab:blue" if r["impl"] == "pagedinfer" else "0.7" for r in move_rows]
    bx.barh(range(len(move_rows)), [r["gbps"] for r in move_rows], color=colors)
    bx.set_yticks(range(len(move_rows)), labels, fontsize=6)
    bx.invert_yaxis()
    for key, style in (("read_gbps", "-"), ("copy_gbps", "--")):
        bx.axvline(machine[key], color="black", ls=style, lw=1, label=f"{key.split('_')[0]} {machine[key]:.1f} GB/s")
    bx.set_xlabel("GB/s")
    bx.set_title("data-movement ops")
    bx.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path

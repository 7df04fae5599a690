"""Pictures of bench results (matplotlib, written as PNG): the roofline chart that places every
op against the machine's bandwidth and compute ceilings."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def roofline(rows: list[dict], machine: dict, path: str | Path, title: str = "pagedinfer ops") -> Path:
    """Left: ops with both FLOPs and bytes at (FLOPs/byte, GFLOP/s) under the roofs
    min(peak, intensity x bandwidth) for fp32 and bf16, pagedinfer coloured by suite, baselines
    grey. Right: ops counted in bytes only, as GB/s against the read and copy ceilings."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    bandwidth = machine["read_gbps"]
    xs = [2.0**e for e in range(-4, 12)]
    for peak_key, style in (("bf16_gflops", "-"), ("fp32_gflops", "--")):
        peak = machine[peak_key]
        ax.plot(xs, [min(peak, x * bandwidth) for x in xs], style, color="black", lw=1.2,
                label=f"roof: {peak_key.split('_')[0]} {peak:.0f} GFLOP/s, {bandwidth:.0f} GB/s")
    compute_rows = [r for r in rows if r.get("flops") and r.get("bytes") and r.get("gflops")]
    colors = {}
    for r in compute_rows:
        ours = r["impl"].startswith("pagedinfer")
        x = r["flops"] / r["bytes"]
        if ours:
            label = None if r["suite"] in colors else f"pagedinfer: {r['suite']}"
            colors.setdefault(r["suite"], f"C{len(colors)}")
            ax.scatter([x], [r["gflops"]], s=30, color=colors[r["suite"]], zorder=3, label=label)
        else:
            ax.scatter([x], [r["gflops"]], s=14, color="0.7", marker="x", zorder=2)
    ax.scatter([], [], s=14, color="0.7", marker="x", label="PyTorch baselines")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte of memory traffic)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"{title}: roofline ({machine.get('threads', '?')} threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

    # Right: each pagedinfer data-movement op (bar) and its baseline in the same run (x).
    move_rows = [r for r in rows if r.get("gbps") and not r.get("flops") and r["suite"] != "machine"
                 and r["impl"].startswith("pagedinfer")]
    by_key = {(r["suite"], r["case"], r["impl"]): r for r in rows}
    ys = range(len(move_rows))
    bx.barh(ys, [r["gbps"] for r in move_rows], color="tab:blue", label="pagedinfer")
    base = [by_key.get((r["suite"], r["case"], r.get("baseline"))) for r in move_rows]
    bx.scatter([b["gbps"] if b and b.get("gbps") else float("nan") for b in base], ys, color="0.3",
               marker="x", zorder=3, label="PyTorch baseline")
    bx.set_yticks(list(ys), [r["case"][:44] for r in move_rows], fontsize=6)
    bx.invert_yaxis()
    for key, style in (("read_gbps", "-"), ("copy_gbps", "--")):
        bx.axvline(machine[key], color="black", ls=style, lw=1, label=f"{key.split('_')[0]} {machine[key]:.1f} GB/s")
    bx.set_xlabel("GB/s")
    bx.set_title("data-movement and memory-bound ops")
    bx.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path

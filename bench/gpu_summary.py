"""Summary of a bench/gpu_check.sh run: steps, tests, sanitizer findings, kernel registers/spills
and the benchmark figures, as a table on stdout and as OUT/summary.json."""
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(out: Path) -> int:
    summary = {"steps": [], "tests": None, "sanitizer": {}, "spills": [], "bench": []}
    steps_file = out / "steps.tsv"
    for line in steps_file.read_text().splitlines() if steps_file.exists() else []:
        name, rc, secs = line.split("\t")
        summary["steps"].append({"step": name, "rc": int(rc), "seconds": int(secs)})
    junit = out / "pytest.xml"
    if junit.exists():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        summary["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    for tool in ("memcheck", "racecheck"):
        log = out / f"sanitizer_{tool}.log"
        if log.exists():
            m = re.findall(r"ERROR SUMMARY: (\d+) error", log.read_text())
            summary["sanitizer"][tool] = int(m[-1]) if m else None
    spills = out / "spills.txt"
    if spills.exists():
        summary["spills"] = [s for s in spills.read_text().splitlines() if s.strip()]
    bench = out / "bench.json"
    if bench.exists():
        doc = json.loads(bench.read_text())
        summary["machine"] = doc.get("machine")
        summary["bench"] = [{k: r.get(k) for k in ("case", "impl", "median_ms", "gbps", "gflops",
                                                    "pct_of_limit", "limit_name", "speedup_vs_baseline")}
                            for r in doc["rows"]]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    print("\n== gpu_check summary ==")
    for s in summary["steps"]:
        print(f"  {s['step']:<22} {'ok' if s['rc'] == 0 else 'FAILED rc=%d' % s['rc']:<12} {s['seconds']:>5} s")
    if summary["tests"]:
        t = summary["tests"]
        print(f"  tests: {t['tests']} run, {t['failures']} failures, {t['errors']} errors, {t['skipped']} skipped")
    for tool, n in summary["sanitizer"].items():
        print(f"  compute-sanitizer {tool}: {'?' if n is None else n} errors")
    print(f"  kernels with register spills: {len(summary['spills'])}")
    if summary["bench"]:
        m = summary.get("machine") or {}
        print(f"  device copy {m.get('copy_gbps', 0):.0f} GB/s, bf16 GEMM {m.get('bf16_gflops', 0) / 1e3:.0f} TFLOP/s")
        print(f"  {'case':<42} {'impl':<28} {'ms':>9} {'GB/s':>8} {'% limit':>8} {'x base':>7}")
        for r in summary["bench"]:
            fmt = lambda v, f: (f % v) if v is not None else "-"  # noqa: E731
            print(f"  {r['case']:<42} {r['impl']:<28} {r['median_ms']:>9.4f} {fmt(r['gbps'], '%.0f'):>8} "
                  f"{fmt(r['pct_of_limit'], '%.0f'):>8} {fmt(r['speedup_vs_baseline'], '%.2f'):>7}")
    failed = [s for s in summary["steps"] if s["rc"] != 0]
    print(f"  wrote {out / 'summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

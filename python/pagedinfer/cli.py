"""The `pagedinfer` command: `pagedinfer bench ...` and `pagedinfer demo`."""
from __future__ import annotations

import argparse
import json
import sys


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    import torch

    from pagedinfer.bench import BenchContext, load_suites
    from pagedinfer.bench.report import print_rows, write_json

    suites = load_suites()
    names = list(suites) if "all" in args.suites else args.suites
    unknown = [n for n in names if n not in suites]
    if unknown:
        print(f"pagedinfer bench: unknown suite(s) {unknown}; choose from {sorted(suites)} or all",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = json.loads(open(args.machine_json).read())["machine"] if args.machine_json else None
    ctx = BenchContext(device=args.device, repeat=args.repeat, warmup=args.warmup,
                       quick=args.quick, machine=machine)
    rows = []
    for name in names:
        rows.extend(suites[name](ctx))
    print_rows(rows, ctx.machine)
    if args.json:
        write_json(args.json, rows, ctx.machine, argv)
        print(f"wrote {args.json}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pagedinfer.demo import run_demo

    run_demo()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagedinfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="microbenchmarks against PyTorch and the machine's limits")
    bench.add_argument("suites", nargs="+", help="suite names (machine, cache, ...) or all")
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    bench.add_argument("--repeat", type=int, default=10, help="timed runs per case (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    bench.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    bench.add_argument("--quick", action="store_true", help="smaller cases, for smoke tests")
    bench.add_argument("--machine-json", metavar="PATH",
                       help="reuse the machine limits from an earlier --json file instead of measuring")

    sub.add_parser("demo", help="a short demonstration of the ops")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args, argv)
    if args.command == "demo":
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The `pagedinfer` command: `pagedinfer generate | chat | bench ... | demo`."""
from __future__ import annotations

import argparse
import json
import sys


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    import torch

    from pagedinfer.bench import ALL_SUITES, BenchContext, load_suites
    from pagedinfer.bench.report import print_rows, write_json

    suites = load_suites()
    names = [n for n in ALL_SUITES if n in suites] if "all" in args.suites else args.suites
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


def _make_llm(args: argparse.Namespace):
    import torch

    from pagedinfer import LLM

    if args.threads:
        torch.set_num_threads(args.threads)
    spec, quantization = None, None
    if getattr(args, "speculative_method", None):  # generate's speculative-decoding flags
        spec = dict(method=args.speculative_method,
                    num_speculative_tokens=args.num_speculative_tokens)
        if args.speculative_model:
            spec["model"] = args.speculative_model
        if args.speculative_method == "int4-self":  # the target runs in float weights
            quantization = "float"
    return LLM(args.model, dtype=args.dtype, device=args.device, kv_cache_memory=args.kv_cache_memory,
               speculative=spec, quantization=quantization)


def _sampling(args: argparse.Namespace):
    from pagedinfer import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def _stream(llm, prompt, params) -> str:
    """Prints the text as it is generated; returns it. Statistics go to stderr."""
    text = []
    for piece in llm.stream(prompt, params):
        print(piece, end="", flush=True)
        text.append(piece)
    print()
    m = llm.last_stream_output.metrics
    rate = f", {m.decode_tokens_per_s:.1f} tok/s" if m.decode_tokens_per_s else ""
    print(f"[{m.num_prompt_tokens} prompt + {m.num_generated_tokens} generated tokens, "
          f"first token {1e3 * (m.time_to_first_token or 0):.0f} ms{rate}]", file=sys.stderr)
    return "".join(text)


def _generate(args: argparse.Namespace) -> int:
    llm = _make_llm(args)
    prompt = args.prompt
    if args.chat:
        prompt = llm.apply_chat_template([{"role": "user", "content": prompt}])
    _stream(llm, prompt, _sampling(args))
    return 0


def _chat(args: argparse.Namespace) -> int:
    llm = _make_llm(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print("pagedinfer chat: type a message; /reset clears the conversation, /exit or Ctrl-D quits.",
          file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            messages = messages[:1] if args.system else []
            continue
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        try:
            reply = _stream(llm, llm.apply_chat_template(messages), _sampling(args))
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": reply})


def _add_model_args(p: argparse.ArgumentParser, max_tokens: int, temperature: float) -> None:
    p.add_argument("--model", help="a .gguf file or an HF folder (default: SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--max-tokens", type=int, default=max_tokens, help=f"default {max_tokens}")
    p.add_argument("--temperature", type=float, default=temperature,
                   help=f"0 = greedy (default {temperature})")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", default="bfloat16", help="activation dtype: bfloat16 (default) or float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--kv-cache-memory", default="512MiB", help="KV-cache pool size (default 512MiB)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagedinfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="microbenchmarks against PyTorch and the machine's limits")
    bench.add_argument("suites", nargs="+",
                       help="suite names (machine, cache, ...) or all; `bench compare --help` for the side-by-side run")
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    bench.add_argument("--repeat", type=int, default=10, help="timed runs per case (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    bench.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    bench.add_argument("--quick", action="store_true", help="smaller cases, for smoke tests")
    bench.add_argument("--machine-json", metavar="PATH",
                       help="reuse the machine limits from an earlier --json file instead of measuring")

    sub.add_parser("demo", help="a short demonstration of the ops")

    gen = sub.add_parser("generate", help="generate text from a prompt, streamed to the terminal")
    gen.add_argument("prompt")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    _add_model_args(gen, max_tokens=256, temperature=0.0)
    gen.add_argument("--speculative-method", choices=["draft", "int4-self", "ngram"],
                     help="speculative decoding: a draft model, the model's own INT4 copy "
                          "drafting for it in float weights, or prompt lookup")
    gen.add_argument("--speculative-model", help="the draft model (.gguf or HF folder) for 'draft'")
    gen.add_argument("--num-speculative-tokens", type=int, default=4,
                     help="tokens drafted per step (1..16, default 4)")

    chat = sub.add_parser("chat", help="an interactive chat with the model")
    chat.add_argument("--system", help="a system message")
    _add_model_args(chat, max_tokens=512, temperature=0.7)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "compare"]:  # its own options: pagedinfer bench compare --help
        from pagedinfer.bench.compare import main as compare_main

        return compare_main(argv[2:])
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args, argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "generate":
        return _generate(args)
    if args.command == "chat":
        return _chat(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

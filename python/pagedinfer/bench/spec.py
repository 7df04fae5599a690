"""`pagedinfer bench spec`: speculative decoding end to end on the default model, one request,
greedy: decode time per token with and without speculation (the baseline row of each case is
the target alone, in the same run), and the acceptance rate and mean accepted length (tokens
emitted per verification, 1..k+1) of each method.

Cases:
  int4-self  the default checkpoint dequantized to float (fp32, and bf16) as the target, its own
             INT4 quantization (RTN, group 32; INT8 LM head) drafting
  draft      the same float target, drafted by the Q4_1 GGUF file itself (a separate model)
  (drafts run bf16 activations behind either target: SpeculativeConfig.draft_dtype's default)
  ngram      the default Q4_1 model as the target (bf16 activations, the LLM default), prompt
             lookup drafting, on a prompt that asks to repeat a given text with a small edit
             (where prompt lookup shines)

Times: decode only (from the first generated token to the last; prefill excluded), median of
the runs; `speedup` = target-alone time per token / speculative time per token.
"""
from __future__ import annotations

import statistics

import torch

from pagedinfer.bench.core import BenchContext, Stats, suite

STORY = ("Write a short story about a lighthouse keeper who finds a message in a bottle. "
         "Describe the sea, the weather and what the message says.")
EDIT_TEXT = ("The old lighthouse stood on the rocks at the edge of the bay. Every night the keeper "
             "climbed the ninety steps to light the lamp, and every morning he wrote the weather "
             "in a small blue book. Ships passed far out at sea, and none of them ever stopped. "
             "In the winter the storms came from the north, and the waves broke over the rocks "
             "so high that the salt reached the windows of the lamp room. The keeper did not mind "
             "the storms. He liked to listen to the wind while he cleaned the glass and trimmed "
             "the wick, and he liked to count the ships that passed safely because of his light. "
             "In the spring he painted the door red again and planted potatoes behind the house.")
EDIT = ("Repeat the following text exactly, but replace the word 'keeper' with 'guardian':\n\n"
        + EDIT_TEXT)


def _run_once(llm, prompt_ids: list[int], params) -> tuple[float, list[int]]:
    """Decode seconds per token of one request (prefill excluded) and its tokens."""
    out = llm.generate(prompt_ids, params, use_tqdm=False)[0]
    m = out.metrics
    return (m.finish_time - m.first_token_time) / max(1, m.num_generated_tokens - 1), \
        out.outputs[0].token_ids


def _stats(times: list[float]) -> Stats:
    times = sorted(times)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return Stats(statistics.median(times), q[0], q[-1], len(times))


@suite("spec")
def bench_spec(ctx: BenchContext):
    from pagedinfer import LLM
    from pagedinfer.engine import SamplingParams
    from pagedinfer.loader import default_model_path, load_model

    path = default_model_path()
    max_tokens = 24 if ctx.quick else 96
    runs = 1 if ctx.quick else max(1, min(ctx.repeat, 3))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    # No prefix caching: every run is a cold start, so runs (and bf16 numerics, which depend on
    # how the prompt was chunked) are alike and outputs comparable token for token.
    common = dict(tokenizer=path, kv_cache_memory="256MiB", progress=False, device=str(ctx.device),
                  enable_prefix_caching=False)
    rows = []

    def case(name, target, prompt, specs):
        """The target alone and each speculative setup, run in turns (so that the machine's
        load drifts alike for all), the first round a warm-up."""
        llms = [LLM(target, dtype=target.dtype, **common)]
        llms += [LLM(target, dtype=target.dtype, speculative=spec, **common) for _, spec in specs]
        ids = llms[0].apply_chat_template([{"role": "user", "content": prompt}])
        times = [[] for _ in llms]
        tokens = [None] * len(llms)
        for r in range(runs + 1):
            for i, llm in enumerate(llms):
                if llm.spec_decoder is not None:
                    llm.spec_decoder.reset_metrics()  # the metrics of the last run are reported
                t, tokens[i] = _run_once(llm, ids, params)
                if r:
                    times[i].append(t)
        stats = _stats(times[0])
        base = ctx.row("spec", name, "target alone", stats, tokens_per_s=1.0 / stats.median_s)
        rows.append(base)
        for (label, spec), llm, t, toks in zip(specs, llms[1:], times[1:], tokens[1:]):
            m = llm.spec_decoder.metrics()
            same = toks == tokens[0]
            impl = (f"{label} k={spec['num_speculative_tokens']}: accept "
                    f"{100 * m['acceptance_rate']:.0f}%, len {m['mean_accepted_length']:.2f}"
                    + ("" if same else " (OUTPUT DIFFERS)"))
            stats = _stats(t)
            rows.append(ctx.row("spec", name, impl, stats, baseline=base,
                                tokens_per_s=1.0 / stats.median_s, identical_output=same, **m))

    # k per target dtype: an fp32 GEMM (MKL) costs ~1.3x at M=3 but ~2x at M=4-5 against M=1
    # on the development machine, so a small k suits the fp32 target; bf16 verification costs
    # about the same for M = 1..9, so a larger k pays there.
    dtypes = {torch.float32: [2, 3]}
    if not ctx.quick:
        dtypes[torch.bfloat16] = [4, 8]
    for dtype, ks in dtypes.items():
        target, _ = load_model(path, dtype, 2048, "float", progress=False)
        draft_q41, _ = load_model(path, dtype, 2048, None, progress=False)
        name = f"story, target {str(dtype).replace('torch.', '')} weights"
        case(name, target, STORY,
             [("int4-self", dict(method="int4-self", num_speculative_tokens=k)) for k in ks]
             + [("draft Q4_1 gguf", dict(method="draft", model=draft_q41,
                                         num_speculative_tokens=ks[-1]))])
        del target, draft_q41
    target, _ = load_model(path, torch.bfloat16, 2048, None, progress=False)  # LLM's default
    case("edit a given text, target Q4_1 (bf16 act.)", target, EDIT,
         [("ngram", dict(method="ngram", num_speculative_tokens=k))
          for k in ([3] if ctx.quick else [3, 5])])
    return rows

"""The systems that `pagedinfer bench compare` puts side by side. Each runs in its own process
(see compare.py) and answers the same calls on the same token-id prompts, greedy, generating
exactly the requested number of tokens (end-of-sequence suppressed), with the same thread count:

    system.generate(prompts: list[list[int]], max_tokens: int) -> (outputs, timings)

outputs: generated token ids per prompt; timings: {"total_s", "ttft_s": [per request] or None}.
"""
from __future__ import annotations

import os
import time


class System:
    name = "?"

    def generate(self, prompts: list[list[int]], max_tokens: int):
        raise NotImplementedError

    def close(self) -> None:
        pass


class TransformersSystem(System):
    """HF transformers on the GGUF file (dequantized to fp32 on load: its numerical reference),
    padded batches with left padding."""

    name = "transformers"

    def __init__(self, model_dir: str, gguf_file: str, threads: int):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file,
                                                          dtype=torch.float32).eval()
        self.pad_id = self.model.config.pad_token_id or 0

    def generate(self, prompts, max_tokens):
        torch = self.torch
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                                      min_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.pad_id)
        total = time.perf_counter() - start
        return [row[width:].tolist() for row in out], {"total_s": total, "ttft_s": None}


class LlamaCppSystem(System):
    """llama.cpp through llama-cpp-python's low-level batch API: one sequence id per request,
    prompts decoded together, then one token per running sequence per llama_decode call."""

    name = "llama.cpp"
    INSTALL = ('CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --no-deps llama-cpp-python diskcache '
               "(compiles llama.cpp; a few minutes)")

    def __init__(self, model_path: str, threads: int, max_seqs: int = 64, n_ctx_per_seq: int = 1024):
        import llama_cpp
        import llama_cpp.llama_cpp as raw

        if os.environ.get("PAGEDINFER_LLAMACPP_EXTRA_BUFTS", "0") != "1":
            # ggml's AMX "extra buffer" path (taken for Q4_1 on CPUs with AMX) segfaults in
            # ggml_backend_amx_mul_mat with llama-cpp-python 0.3.36. Turning extra buffer types
            # off leaves llama.cpp's AVX-512 kernels; for Q4_1 nothing else is repacked.
            default_params = raw.llama_model_default_params

            def without_extra_bufts():
                params = default_params()
                params.use_extra_bufts = False
                return params

            raw.llama_model_default_params = without_extra_bufts
        # The high-level Llama sets n_seq_max only for embeddings; one sequence id per request
        # needs it. Each sequence gets its own n_ctx_per_seq cells (kv_unified off): with one
        # unified buffer every token would attend over all sequences' cells, masked.
        default_context = raw.llama_context_default_params

        def multi_sequence_context():
            params = default_context()
            params.n_seq_max = max_seqs
            params.kv_unified = False
            return params

        raw.llama_context_default_params = multi_sequence_context
        self.lc = llama_cpp
        self.llama = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx_per_seq * max_seqs, n_batch=2048,
                                     n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                                     logits_all=False, verbose=False)
        self.ctx = self.llama.ctx
        self.n_vocab = self.llama.n_vocab()
        self.max_seqs = max_seqs

    def _memory_clear(self):
        lc = self.lc
        if hasattr(lc, "llama_memory_clear"):
            lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        else:
            lc.llama_kv_self_clear(self.ctx)

    def generate(self, prompts, max_tokens):
        import numpy as np

        lc = self.lc
        assert len(prompts) <= self.max_seqs
        self._memory_clear()
        n = len(prompts)
        capacity = max(sum(len(p) for p in prompts), n)
        batch = lc.llama_batch_init(capacity, 0, 1)
        outputs = [[] for _ in range(n)]
        ttft = [0.0] * n
        start = time.perf_counter()
        try:
            def decode(entries):  # entries: (token, pos, seq, wants_logits)
                batch.n_tokens = len(entries)
                for j, (tok, pos, seq, logits) in enumerate(entries):
                    batch.token[j] = tok
                    batch.pos[j] = pos
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = seq
                    batch.logits[j] = logits
                if lc.llama_decode(self.ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")

            def argmax(index):
                ptr = lc.llama_get_logits_ith(self.ctx, index)
                logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                logits[self.llama.token_eos()] = -np.inf  # generate exactly max_tokens
                return int(logits.argmax())

            # Prefill: prompts in chunks of up to 2,048 tokens (n_batch).
            entries, owners = [], []
            for s, p in enumerate(prompts):
                for pos, tok in enumerate(p):
                    entries.append((tok, pos, s, pos == len(p) - 1))
            for lo in range(0, len(entries), 2048):
                chunk = entries[lo:lo + 2048]
                decode(chunk)
                for j, (_, pos, s, last) in enumerate(chunk):
                    if last:
                        outputs[s].append(argmax(j))
                        ttft[s] = time.perf_counter() - start
            for step in range(1, max_tokens):
                entries = [(outputs[s][-1], len(prompts[s]) + step - 1, s, True) for s in range(n)]
                decode(entries)
                for s in range(n):
                    outputs[s].append(argmax(s))
        finally:
            lc.llama_batch_free(batch)
        return outputs, {"total_s": time.perf_counter() - start, "ttft_s": ttft}

    def close(self):
        self.llama.close()


class PagedinferSystem(System):
    """pagedinfer's engine (LLM.generate) on the same file; also the serving workloads that need
    an engine taking requests over time (online arrivals, prefix caching)."""

    name = "pagedinfer"

    def __init__(self, model_path: str, threads: int, **kwargs):
        import torch

        import pagedinfer

        torch.set_num_threads(threads)
        self.pagedinfer = pagedinfer
        self.model_path = model_path
        self.kwargs = kwargs
        # Prefix caching off for the shared workloads: the others have none, and a repeated
        # prompt must cost a full prefill every time (the shared-prefix run measures caching).
        self.llm = pagedinfer.LLM(model=model_path, progress=False, enable_prefix_caching=False,
                                  **kwargs)

    def _params(self, max_tokens):
        return self.pagedinfer.SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)

    def generate(self, prompts, max_tokens):
        start = time.perf_counter()
        results = self.llm.generate(prompts, self._params(max_tokens), use_tqdm=False)
        total = time.perf_counter() - start
        ttft = [r.metrics.time_to_first_token for r in results]
        return ([list(r.outputs[0].token_ids) for r in results],
                {"total_s": total, "ttft_s": ttft if None not in ttft else None})

    def extra_workloads(self, spec, window) -> dict:
        return {"online": [self._online(spec, window, rate) for rate in spec["online"]["rates"]],
                "shared_prefix": self._shared_prefix(spec, window)}

    def _online(self, spec, window, rate: float) -> dict:
        """Requests arrive by a Poisson process at `rate`/s; the engine steps whenever work is
        queued. Records each token's time: TTFT from arrival, inter-token latency between tokens;
        goodput counts requests that met both latency objectives, per second of the run."""
        import random

        o = spec["online"]
        rng = random.Random(1234)
        arrivals, t = [], 0.0
        for _ in range(o["requests"]):
            t += rng.expovariate(rate)
            arrivals.append(t)
        prompts = [window(spec, 200 + i, o["prompt"]) for i in range(o["requests"])]
        token_times: dict[str, list[float]] = {}
        seqs, start, nxt = [], time.perf_counter(), 0
        while nxt < len(arrivals) or any(not s.is_finished for s in seqs):
            now = time.perf_counter() - start
            while nxt < len(arrivals) and arrivals[nxt] <= now:
                seq = self.llm.add_request(prompts[nxt], self._params(o["tokens"]))
                seq.bench_arrival = start + arrivals[nxt]
                seqs.append(seq)
                token_times[seq.request_id] = []
                nxt += 1
            if all(s.is_finished for s in seqs):
                time.sleep(max(0.0, min(0.01, arrivals[nxt] - now)))
                continue
            for seq in self.llm.step():
                token_times[seq.request_id].append(time.perf_counter())
        duration = time.perf_counter() - start
        ttfts, itls, good = [], [], 0
        for seq in seqs:
            times = token_times[seq.request_id]
            ttft = times[0] - seq.bench_arrival
            gaps = [b - a for a, b in zip(times, times[1:])]
            ttfts.append(ttft)
            itls.extend(gaps)
            if ttft <= o["slo_ttft_s"] and (not gaps or max(gaps) <= o["slo_itl_s"]):
                good += 1

        def pct(values, q):
            values = sorted(values)
            return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0

        return {"rate": rate, "requests": len(seqs), "duration_s": duration,
                "tok_s": sum(len(v) for v in token_times.values()) / duration,
                "ttft_p50_s": pct(ttfts, 0.5), "ttft_p90_s": pct(ttfts, 0.9), "ttft_p99_s": pct(ttfts, 0.99),
                "itl_p50_s": pct(itls, 0.5), "itl_p90_s": pct(itls, 0.9), "itl_p99_s": pct(itls, 0.99),
                "goodput_req_s": good / duration, "slo_met": good}

    def _shared_prefix(self, spec, window) -> dict:
        """Requests that share a long system prompt, with prefix caching on and off: one request
        first (it fills the cache), then the rest together."""
        sp = spec["shared_prefix"]
        system = window(spec, 300, sp["system"])
        prompts = [system + window(spec, 400 + i, sp["user"]) for i in range(sp["requests"])]
        result = {}
        for caching in (True, False):
            llm = self.pagedinfer.LLM(model=self.model_path, progress=False,
                                      enable_prefix_caching=caching, **self.kwargs)
            llm.generate(prompts[:1], self._params(sp["tokens"]), use_tqdm=False)
            start = time.perf_counter()
            out = llm.generate(prompts[1:], self._params(sp["tokens"]), use_tqdm=False)
            total = time.perf_counter() - start
            ttft = [r.metrics.time_to_first_token for r in out]
            result["on" if caching else "off"] = {
                "total_s": total, "ttft_mean_s": sum(ttft) / len(ttft),
                "cached_prompt_tokens": sum(r.metrics.num_cached_tokens for r in out),
                "prompt_tokens": sum(r.metrics.num_prompt_tokens for r in out),
            }
        result["speedup"] = result["off"]["total_s"] / result["on"]["total_s"]
        return result


class SyntheticSystem(System):
    """A stand-in with known timings, for testing the harness, JSON and plots without a model."""

    name = "synthetic"

    def __init__(self, per_token_s: float = 1e-4, **_):
        self.per_token_s = per_token_s

    def generate(self, prompts, max_tokens):
        time.sleep(self.per_token_s * max_tokens)
        outputs = [[(sum(p) + i) % 97 for i in range(max_tokens)] for p in prompts]
        return outputs, {"total_s": self.per_token_s * max_tokens, "ttft_s": [self.per_token_s] * len(prompts)}

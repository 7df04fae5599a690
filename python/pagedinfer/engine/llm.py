"""LLM: the vLLM-style front end. One engine step reads as three lines (schedule, run, update);
around it, tokenization in, incremental detokenization and stop strings out."""
from __future__ import annotations

import itertools
import re
from typing import Iterator

import torch
from tqdm.auto import tqdm

from pagedinfer.engine.block_manager import BlockManager
from pagedinfer.engine.outputs import RequestOutput
from pagedinfer.engine.params import SamplingParams
from pagedinfer.engine.runner import ModelRunner, kv_bytes_per_block
from pagedinfer.engine.scheduler import Scheduler
from pagedinfer.engine.sequence import Sequence, SequenceStatus

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
           "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}


def parse_bytes(value: int | str) -> int:
    """1073741824, "1GiB", "512MiB", "2GB" -> bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?)B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ValueError(f"kv_cache_memory: cannot read {value!r} as a size (e.g. '1GiB')")
    base = 1024 if m.group(3) or not m.group(2) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2).upper() or " "))


class LLM:
    """LLM(model=None) loads the default model (SmolLM2-135M-Instruct Q4_1), a .gguf file, an HF
    folder, or takes a loaded LlamaModel (then tokenizer= is required: a path or a tokenizer).
    dtype: activation and KV-cache dtype; bfloat16 by default (the INT4/INT8 kernels' fast paths
    take bf16 activations; fp32 is the numerical reference, 2-3x slower on this machine).
    kv_cache_memory sizes the block pool (bytes or "1GiB").
    max_num_seqs / max_num_batched_tokens bound each step; max_model_len caps prompt + output."""

    def __init__(self, model=None, dtype: str | torch.dtype = "bfloat16", tokenizer=None,
                 kv_cache_memory: int | str = "1GiB", block_size: int = 16,
                 max_num_seqs: int = 64, max_num_batched_tokens: int = 2048,
                 max_model_len: int | None = None, enable_prefix_caching: bool = True,
                 device: str = "cpu", seed: int = 0, quantization: str | None = None,
                 progress: bool = True, speculative: dict | None = None):
        from pagedinfer.loader import load_model, load_tokenizer
        from pagedinfer.engine.speculative import SpeculativeConfig

        # speculative=dict(method="draft" | "int4-self" | "ngram", model=..., num_speculative_tokens=k)
        spec_config = None if speculative is None else SpeculativeConfig.from_dict(speculative)

        self.dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if self.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"LLM: dtype must be float32, bfloat16 or float16, got {dtype!r}")
        self.device = torch.device(device)
        if model is None or isinstance(model, str):
            self.model, self.model_path = load_model(model, self.dtype, max_model_len,
                                                     quantization, progress)
        else:  # an already loaded LlamaModel (tests, or several engines over one model)
            self.model, self.model_path = model, None
            if model.dtype != self.dtype:
                raise ValueError(f"LLM: the model was loaded in {model.dtype}, dtype is {self.dtype}")
        if self.device.type != "cpu":
            self.model.to(self.device)
        self.config = self.model.config
        if tokenizer is None or isinstance(tokenizer, str):
            if tokenizer is None and self.model_path is None:
                raise ValueError("LLM: give tokenizer= with a preloaded model")
            tokenizer = load_tokenizer(tokenizer or self.model_path)
        self.tokenizer = tokenizer
        self._decode = self.tokenizer.backend_tokenizer.decode
        num_blocks = parse_bytes(kv_cache_memory) // kv_bytes_per_block(self.config, block_size,
                                                                         self.dtype)
        if num_blocks < 1:
            raise ValueError(f"LLM: kv_cache_memory={kv_cache_memory!r} holds no block of "
                             f"{kv_bytes_per_block(self.config, block_size, self.dtype)} bytes")
        self.max_model_len = min(max_model_len or self.config.max_position_embeddings,
                                 self.model.cos.shape[0])  # the RoPE table's length
        eos = set(self.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, max_num_batched_tokens,
                                   self.max_model_len, tuple(eos))
        self.runner = ModelRunner(self.model, num_blocks, block_size, self.device, seed)
        self._ids = itertools.count()
        self.spec_decoder = None
        if spec_config is not None:  # after the runner: the decoder drives it (spec_runner.py)
            from pagedinfer.engine.spec_runner import build_spec_decoder

            self.spec_decoder = build_spec_decoder(self, spec_config, progress)

    # ---- requests -------------------------------------------------------------------------------
    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> Sequence:
        """Tokenizes and queues one request. Bad input does not raise: the returned sequence is
        finished with finish_reason "error" and `.error` says why."""
        params = params or SamplingParams()
        request_id = request_id or str(next(self._ids))
        text = prompt if isinstance(prompt, str) else None
        try:
            if isinstance(prompt, str):
                ids = self.tokenizer(prompt)["input_ids"]
            else:
                ids = [int(t) for t in prompt]
                bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
                if bad:
                    raise ValueError(f"request {request_id}: token ids {bad[:5]} are outside the "
                                     f"vocabulary (0..{self.config.vocab_size - 1})")
        except (TypeError, ValueError) as exc:
            ids, error = [], str(exc)
        else:
            error = None
        generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
        seq = Sequence(request_id, ids, params, text, generator)
        seq.prefix_offset = max(0, len(ids) - 5)  # decode a little context: leading spaces
        seq.read_offset = len(ids)
        if error is None:
            try:
                self.scheduler.add(seq)
            except ValueError as exc:
                error = str(exc)
        if error is not None:
            seq.status, seq.finish_reason, seq.error = SequenceStatus.FINISHED, "error", error
        return seq

    def abort(self, request_id: str) -> None:
        self.scheduler.abort(request_id)

    # ---- the engine step ------------------------------------------------------------------------
    def step(self) -> list[Sequence]:
        """Runs one step; returns the sequences that received a token."""
        if self.spec_decoder is not None:
            return self.spec_decoder.step()
        batch = self.scheduler.schedule()
        if not batch.seqs:
            raise RuntimeError("LLM.step: nothing could be scheduled (pool too small?)")
        sampled = self.runner.run(batch)
        self.scheduler.update(batch, sampled)
        advanced = [s for s, t in zip(batch.seqs, sampled) if t is not None]
        for seq in advanced:
            self._detokenize(seq)
        return advanced

    def _detokenize(self, seq: Sequence) -> None:
        """Appends the new text (vLLM's incremental scheme: decode from a few tokens back and
        keep what the newest tokens add; hold back an incomplete UTF-8 sequence). Cuts the text
        at a stop string and finishes the sequence there."""
        skip = seq.params.skip_special_tokens
        ids = seq.token_ids
        before = self._decode(ids[seq.prefix_offset: seq.read_offset], skip_special_tokens=skip)
        after = self._decode(ids[seq.prefix_offset:], skip_special_tokens=skip)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            old_len = len(seq.output_text)
            seq.output_text += after[len(before):]
            seq.prefix_offset, seq.read_offset = seq.read_offset, len(ids)
            hits = [at for stop in seq.params.stop
                    if (at := seq.output_text.find(stop, max(0, old_len - len(stop) + 1))) >= 0]
            if hits:  # cut at the earliest stop string
                seq.output_text = seq.output_text[: min(hits)]
                self.scheduler.finish(seq, "stop")
        elif seq.is_finished and seq.read_offset < len(ids):  # flush what is left
            seq.output_text += after[len(before):]

    # ---- front ends -----------------------------------------------------------------------------
    def generate(self, prompts, sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """prompts: a string, a list of token ids, or a list of either. Returns one RequestOutput
        per prompt, in order. A bad prompt gets finish_reason "error"; the others still run."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts
                                        and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"generate: {len(prompts)} prompts but {len(params)} sampling params")
        seqs = [self.add_request(p, sp) for p, sp in zip(prompts, params)]
        bar = tqdm(total=len(seqs), desc="generating", disable=not use_tqdm, leave=False)
        try:
            done = 0
            while any(not s.is_finished for s in seqs):
                self.step()
                now = sum(s.is_finished for s in seqs)
                bar.update(now - done)
                done = now
        finally:
            bar.close()
            for seq in seqs:  # on an exception (Ctrl-C), leave no blocks behind
                if not seq.is_finished:
                    self.scheduler.finish(seq, "abort")
        return [RequestOutput.from_seq(s) for s in seqs]

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(self, messages, sampling_params: SamplingParams | None = None,
             use_tqdm: bool = True) -> list[RequestOutput]:
        """messages: one conversation [{"role": ..., "content": ...}, ...] or a list of them."""
        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        return self.generate([self.apply_chat_template(m) for m in convs], sampling_params, use_tqdm)

    def stream(self, prompt: str | list[int], sampling_params: SamplingParams | None = None,
               ) -> Iterator[str]:
        """Yields the text of one request as it is generated. Text that could still turn out to
        be the start of a stop string is held back until it cannot."""
        seq = self.add_request(prompt, sampling_params)
        if seq.error:
            raise ValueError(seq.error)
        hold = max((len(s) for s in seq.params.stop), default=1) - 1
        sent = 0
        try:
            while not seq.is_finished:
                self.step()
                safe = len(seq.output_text) if seq.is_finished else len(seq.output_text) - hold
                if safe > sent:
                    yield seq.output_text[sent:safe]
                    sent = safe
        finally:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
        if len(seq.output_text) > sent:
            yield seq.output_text[sent:]
        self.last_stream_output = RequestOutput.from_seq(seq)

"""SpecDecoder: the continuous-batching step with speculative decoding.

    batch = scheduler.schedule()            as without speculation (decodes cost 1 token each)
    extend each decoding sequence by up to k draft tokens (proposer), blocks allocated for them
    one target forward over the whole varlen batch (decodes have 1 + n_i query tokens)
    verify each decoding sequence (speculative.verify) -> 1..n_i + 1 emitted tokens
    append them one at a time, with the usual stop checks and detokenization after each
    roll the target's blocks (and the draft's) back to the tokens whose KV is now valid

k_i = min(k, tokens left before max_tokens - 1, room before max_model_len - 1, the step's token
budget), and 0 when the target's pool has no free block for the drafts: speculation never
preempts anyone. Emitting tokens one at a time with the usual checks means a sequence never gets
more than max_tokens, stops at an end-of-sequence token, and a stop string cuts the text (and
ends the token list) exactly where it would without speculation.
"""
from __future__ import annotations

import time

import torch

from pagedinfer.engine.sampler import Sampler, greedy_tokens
from pagedinfer.engine.sequence import Sequence
from pagedinfer.engine.speculative import SpeculativeConfig, verify, verify_greedy


class SpecDecoder:
    def __init__(self, llm, config: SpeculativeConfig, proposer):
        self.llm = llm
        self.config = config
        self.k = config.num_speculative_tokens
        self.proposer = proposer
        self.reset_metrics()

    def reset_metrics(self) -> None:
        self.num_verifications = 0  # verifications of at least one draft token
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.num_emitted_tokens = 0  # tokens emitted by those verifications
        self.propose_time = 0.0
        self.target_time = 0.0

    def metrics(self) -> dict:
        """acceptance_rate: accepted / proposed draft tokens; mean_accepted_length: tokens
        emitted per verification (accepted drafts + the correction or bonus token, so 1..k+1)."""
        n = self.num_verifications
        return {
            "method": self.config.method,
            "num_speculative_tokens": self.k,
            "verifications": n,
            "draft_tokens": self.num_draft_tokens,
            "accepted_tokens": self.num_accepted_tokens,
            "acceptance_rate": (self.num_accepted_tokens / self.num_draft_tokens
                                if self.num_draft_tokens else 0.0),
            "mean_accepted_length": self.num_emitted_tokens / n if n else 0.0,
            "propose_s": self.propose_time,
            "target_s": self.target_time,
        }

    @torch.inference_mode()
    def step(self) -> list[Sequence]:
        llm = self.llm
        sched, bm, runner = llm.scheduler, llm.block_manager, llm.runner
        batch = sched.schedule()
        if not batch.seqs:
            raise RuntimeError("LLM.step: nothing could be scheduled (pool too small?)")
        # ---- how many drafts each decoding sequence may take ----------------------------------
        budget = sched.max_num_batched_tokens - batch.total_tokens
        spec_idx, spec_k = [], []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_tokens)):
            if n != 1 or seq.is_prefilling or budget <= 0:
                continue
            k = min(self.k, seq.params.max_tokens - seq.num_output_tokens - 1,
                    llm.max_model_len - seq.num_tokens - 1, budget)
            if k < 1 or not bm.can_allocate(seq, seq.num_tokens + k):
                continue
            bm.allocate(seq, seq.num_tokens + k)
            budget -= k
            spec_idx.append(i)
            spec_k.append(k)
        # ---- draft ------------------------------------------------------------------------------
        t0 = time.perf_counter()
        default_gen = runner.sampler.generator
        spec_seqs = [batch.seqs[i] for i in spec_idx]
        drafts, draft_probs = self.proposer.propose(
            spec_seqs, spec_k, [s.generator or default_gen for s in spec_seqs])
        old_len = {}
        for i, d in zip(spec_idx, drafts):
            seq = batch.seqs[i]
            old_len[i] = seq.num_tokens
            seq.token_ids.extend(d)  # tentatively, so the runner's metadata covers them
            batch.num_tokens[i] += len(d)
        t1 = time.perf_counter()
        # ---- one target forward -----------------------------------------------------------------
        input_ids, meta, _, _ = runner.prepare(batch)
        hidden = llm.model.forward(input_ids, meta, runner.kv_caches)
        rows, owners = [], []  # the logit rows each sampling sequence needs
        start = 0
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_tokens)):
            end = start + n
            if seq.num_computed_tokens + n == seq.num_tokens:  # samples (maybe after drafts)
                first = end - (n if i in old_len else 1)
                owners.append((i, len(rows), end - first))
                rows.extend(range(first, end))
            start = end
        logits, argmax = None, []
        if rows:
            logits = llm.model.compute_logits(hidden[torch.tensor(rows, device=hidden.device)])
            argmax = greedy_tokens(logits)
        self.target_time += time.perf_counter() - t1
        self.propose_time += t1 - t0
        # ---- verify and emit --------------------------------------------------------------------
        emitted: dict[int, list[int]] = {}
        draft_of = dict(zip(spec_idx, zip(drafts, draft_probs)))
        for i, row, count in owners:
            seq = batch.seqs[i]
            d, q = draft_of.get(i, ([], None))
            if seq.params.greedy:
                out = verify_greedy(d, argmax[row: row + count])
            else:
                p = torch.stack([Sampler.probs(logits[r].cpu(), seq.params)
                                 for r in range(row, row + count)])
                out = verify(d, p, q, seq.generator or default_gen)
            emitted[i] = out
            if d:
                self.num_verifications += 1
                self.num_draft_tokens += len(d)
                self.num_accepted_tokens += len(out) - 1
                self.num_emitted_tokens += len(out)
        advanced = []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_tokens)):
            out = emitted.get(i)
            if i in old_len:
                del seq.token_ids[old_len[i]:]
                n = n - len(draft_of[i][0]) + len(out) - 1  # last token + the accepted drafts
            seq.num_computed_tokens += n
            bm.commit(seq)
            if out is None:
                continue
            advanced.append(seq)
            for token in out:
                seq.append_token(token)
                reason = sched._stop_reason(seq, token)
                if reason is not None:
                    sched.finish(seq, reason)
                llm._detokenize(seq)
                if seq.is_finished:
                    break
            if i in old_len:
                if not seq.is_finished:
                    bm.rollback(seq, seq.num_computed_tokens)
                self.proposer.verified(seq, seq.num_computed_tokens)
        self.proposer.release(sched.running)
        return advanced


def build_spec_decoder(llm, config: SpeculativeConfig, progress: bool = True) -> SpecDecoder:
    """The proposer for config.method, checked against the target. A draft model gets a KV pool
    with as many blocks as the target's (a sequence never needs more draft blocks than target
    blocks: the draft's KV stops one token short of the target's)."""
    from pagedinfer.engine.proposers import DraftModelProposer, NgramProposer, int4_self_model

    if config.method == "ngram":
        return SpecDecoder(llm, config, NgramProposer(config.prompt_lookup_min,
                                                      config.prompt_lookup_max))
    draft_dtype = config.draft_torch_dtype(llm.dtype)
    if config.method == "int4-self":
        draft = int4_self_model(llm.model, dtype=draft_dtype)
    else:
        if isinstance(config.model, str):
            from pagedinfer.loader import load_model

            draft, _ = load_model(config.model, draft_dtype, llm.max_model_len, None, progress)
        else:  # an already loaded LlamaModel
            draft = config.model
        if draft.config.vocab_size != llm.config.vocab_size:
            raise ValueError(f"speculative: the draft model's vocabulary has "
                             f"{draft.config.vocab_size} tokens, the target's "
                             f"{llm.config.vocab_size}; they must be the same vocabulary")
        if draft.cos.shape[0] < llm.max_model_len:
            raise ValueError(f"speculative: the draft model's RoPE table covers "
                             f"{draft.cos.shape[0]} positions, max_model_len is "
                             f"{llm.max_model_len}")
    bm = llm.block_manager
    return SpecDecoder(llm, config, DraftModelProposer(draft, bm.num_blocks, bm.block_size,
                                                       llm.device))

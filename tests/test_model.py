"""The default model (SmolLM2-135M-Instruct Q4_1) on pagedinfer's ops against HF transformers on
the same GGUF, both in fp32: teacher-forced logits over whole prompts, and greedy generations."""
from __future__ import annotations

import pytest
import torch

from engine_common import PROMPTS, hf_reference, make_llm, one_thread, tokenizer  # noqa: F401
from pagedinfer import SamplingParams
from pagedinfer.engine.scheduler import ScheduledBatch
from pagedinfer.engine.sequence import Sequence

GEN_TOKENS = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hf():
    return hf_reference()


@pytest.fixture(scope="module")
def hf_greedy(hf):
    """HF's greedy continuations of PROMPTS (batched, left-padded), cut after the first EOS."""
    tok = tokenizer()
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    width = max(map(len, ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    with torch.inference_mode():
        out = hf.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                          max_new_tokens=GEN_TOKENS, eos_token_id=2, pad_token_id=pad)
    result = []
    for row in out[:, width:].tolist():
        result.append(row[: row.index(2) + 1] if 2 in row else row)
    return ids, result


def test_teacher_forced_logits_match_hf(hf, hf_greedy):
    """Prompt + HF's continuation, all sequences in one varlen step: every position's logits."""
    prompts, continuations = hf_greedy
    llm = make_llm()
    seqs = [Sequence(str(i), p + c, SamplingParams()) for i, (p, c) in enumerate(zip(prompts, continuations))]
    for s in seqs:
        llm.block_manager.allocate(s, s.num_tokens)
    batch = ScheduledBatch(seqs, [s.num_tokens for s in seqs])
    ours = llm.runner.logits_all(batch)
    for s in seqs:
        llm.block_manager.free_seq(s)
    agree = total = 0
    offset = 0
    with torch.inference_mode():
        for s in seqs:
            ref = hf(torch.tensor([s.token_ids])).logits[0].float()
            mine = ours[offset: offset + s.num_tokens]
            offset += s.num_tokens
            rel = ((mine - ref).norm() / ref.norm()).item()
            assert rel < 2e-3, f"request {s.request_id}: relative logits error {rel:.2e}"
            agree += (mine.argmax(-1) == ref.argmax(-1)).sum().item()
            total += s.num_tokens
    assert agree / total >= 0.995, f"top-1 agreement {agree}/{total}"
    assert llm.block_manager.num_free_blocks == llm.block_manager.num_blocks


def test_greedy_generations_match_hf(hf_greedy):
    prompts, expected = hf_greedy
    llm = make_llm()
    outs = llm.generate(prompts, SamplingParams(max_tokens=GEN_TOKENS, temperature=0), use_tqdm=False)
    same = sum(o.outputs[0].token_ids == e for o, e in zip(outs, expected))
    assert same >= 9, f"only {same}/10 greedy generations identical to HF's"
    assert llm.block_manager.num_free_blocks == llm.block_manager.num_blocks


def test_bf16_activations_stay_close(hf_greedy):
    """bf16 activations: the same model within bf16 accuracy (greedy may drift, logits close)."""
    prompts, continuations = hf_greedy
    llm32, llm16 = make_llm(), make_llm(torch.bfloat16)
    tokens = prompts[0] + continuations[0]
    logits = []
    for llm in (llm32, llm16):
        seq = Sequence("x", tokens, SamplingParams())
        llm.block_manager.allocate(seq, seq.num_tokens)
        logits.append(llm.runner.logits_all(ScheduledBatch([seq], [seq.num_tokens])))
        llm.block_manager.free_seq(seq)
    rel = ((logits[1] - logits[0]).norm() / logits[0].norm()).item()
    assert rel < 5e-2, f"bf16 vs fp32 relative logits error {rel:.2e}"
    assert (logits[1].argmax(-1) == logits[0].argmax(-1)).float().mean() > 0.9

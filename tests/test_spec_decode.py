"""Speculative decoding in the engine (LLM(speculative=...)), on tiny random Llama models.

- greedy: token-identical to the target alone, for every method, over prompts of mixed lengths
  in one batch, with a KV pool small enough to force preemption; stop tokens, stop strings and
  max_tokens end the output exactly where they do without speculation;
- sampling: the emitted tokens follow the target's distribution (chi-square of the joint of the
  2nd and 3rd tokens over 20,000 requests (k = 1: draft, residual and bonus paths) and 8,000
  (k = 3, top-k; k = 2, top-p), against the target's exact joint, fixed seeds);
- no block is leaked (target pool and draft pool) after any run;
- bad configurations fail at construction with a clear message.
"""
from __future__ import annotations

import pytest
import torch

from pagedinfer import LLM
from pagedinfer.engine import SamplingParams
from pagedinfer.engine.sampler import Sampler
from pagedinfer.engine.scheduler import ScheduledBatch
from spec_models import VOCAB, write_tiny_llama
from test_spec_verify import chi_square_pvalue

BLOCK = 4
REQUESTS = {1: 20_000, 2: 8_000, 3: 8_000}  # per sampling case, by k (the pure rule: 20,000 per k)
BLOCK_BYTES = 2 * 2 * BLOCK * 2 * 16 * 4  # layers * K,V * block * kv heads * head_dim * fp32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec_models")
    base = write_tiny_llama(str(root / "target"), seed=1)
    write_tiny_llama(str(root / "draft"), seed=2, base=base, noise=0.15)
    write_tiny_llama(str(root / "far"), seed=5, base=base, noise=0.7)
    write_tiny_llama(str(root / "other"), seed=3, layers=1)
    write_tiny_llama(str(root / "vocab20"), seed=4, vocab=20)
    return {name: str(root / name) for name in ("target", "draft", "far", "other", "vocab20")}


def make_llm(models, spec=None, blocks=256, **kw):
    kw.setdefault("dtype", "float32")  # greedy identity is exact in fp32 (see the bf16 test)
    return LLM(models["target"], kv_cache_memory=blocks * BLOCK_BYTES, block_size=BLOCK,
               progress=False, speculative=spec, **kw)


def batch_case(seed=0, n=16):
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, VOCAB, (int(m),), generator=gen).tolist()
               for m in torch.randint(1, 40, (n,), generator=gen)]
    params = [SamplingParams(max_tokens=int(m), temperature=0, ignore_eos=True)
              for m in torch.randint(1, 40, (n,), generator=gen)]
    return prompts, params


def assert_no_leaks(llm):
    bm = llm.block_manager
    assert bm.num_free_blocks == bm.num_blocks and not any(bm.ref_counts)
    assert llm.spec_decoder.proposer.num_blocks_used == 0


@pytest.fixture(scope="module")
def reference(models):
    prompts, params = batch_case()
    return make_llm(models).generate(prompts, params, use_tqdm=False)


@pytest.mark.parametrize("spec", [
    dict(method="ngram", num_speculative_tokens=3),
    dict(method="draft", num_speculative_tokens=5),
    dict(method="draft", num_speculative_tokens=1, model="other"),
    dict(method="int4-self", num_speculative_tokens=8),
], ids=["ngram-k3", "draft-k5", "other-draft-k1", "int4-self-k8"])
def test_greedy_matches_the_target_alone_under_preemption(models, reference, spec):
    if spec["method"] == "draft":
        spec = dict(spec, model=models[spec.get("model", "draft")])
    prompts, params = batch_case()
    llm = make_llm(models, spec, blocks=24)  # ~2 long sequences' worth: forces preemption
    out = llm.generate(prompts, params, use_tqdm=False)
    assert llm.scheduler.num_preemptions > 0
    for ref, got, p in zip(reference, out, params):
        assert got.outputs[0].token_ids == ref.outputs[0].token_ids
        assert len(got.outputs[0].token_ids) == p.max_tokens
        assert got.outputs[0].text == ref.outputs[0].text
    m = llm.spec_decoder.metrics()
    assert m["draft_tokens"] > 0 and 0.0 <= m["acceptance_rate"] <= 1.0
    assert 1.0 <= m["mean_accepted_length"] <= spec["num_speculative_tokens"] + 1
    assert_no_leaks(llm)


@pytest.mark.parametrize("method", ["ngram", "int4-self"])
def test_stop_tokens_strings_and_max_tokens_cut_exactly(models, method):
    prompts, _ = batch_case(seed=1, n=8)
    plain = make_llm(models)
    # Stops taken from the reference outputs themselves, so they do fire mid-output.
    free = plain.generate(prompts, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True),
                          use_tqdm=False)
    params = []
    for i, o in enumerate(free):
        ids, text = o.outputs[0].token_ids, o.outputs[0].text
        if i % 3 == 0:
            params.append(SamplingParams(max_tokens=30, temperature=0, stop_token_ids=[ids[7]]))
        elif i % 3 == 1:
            params.append(SamplingParams(max_tokens=30, temperature=0, stop=[text[9:12]]))
        else:
            params.append(SamplingParams(max_tokens=5 + i, temperature=0, ignore_eos=True))
    ref = plain.generate(prompts, params, use_tqdm=False)
    llm = make_llm(models, dict(method=method, num_speculative_tokens=6))
    out = llm.generate(prompts, params, use_tqdm=False)
    for r, g in zip(ref, out):
        assert (g.outputs[0].token_ids, g.outputs[0].text, g.outputs[0].finish_reason) == \
               (r.outputs[0].token_ids, r.outputs[0].text, r.outputs[0].finish_reason)
    assert {o.outputs[0].finish_reason for o in out} == {"stop", "length"}
    assert_no_leaks(llm)


def target_pair_marginal(llm, prompt, params):
    """The target's exact distribution of the 2nd and 3rd sampled tokens (the first one, sampled
    at prefill, summed out): [V * V], from teacher forcing over all V * V continuations."""
    from pagedinfer.engine.sequence import Sequence

    seqs = []
    for t1 in range(VOCAB):
        for t2 in range(VOCAB):
            seq = Sequence(f"{t1}-{t2}", prompt + [t1, t2], params)
            llm.block_manager.allocate(seq, seq.num_tokens)
            seqs.append(seq)
    batch = ScheduledBatch(seqs, [s.num_tokens for s in seqs])
    logits = llm.runner.logits_all(batch).view(VOCAB, VOCAB, len(prompt) + 2, VOCAB)
    for s in seqs:
        llm.block_manager.free_seq(s)
    p1 = Sampler.probs(logits[0, 0, -3], params).double()  # [t1]
    p2 = torch.stack([Sampler.probs(logits[t, 0, -2], params) for t in range(VOCAB)]).double()
    p3 = torch.stack([Sampler.probs(logits[a, b, -1], params) for a in range(VOCAB)
                      for b in range(VOCAB)]).double().view(VOCAB, VOCAB, VOCAB)
    return (p1[:, None, None] * p2[:, :, None] * p3).sum(0).flatten()


# (k, temperature, top_k, top_p). The top-p case runs hot (3.0): the tiny target is peaked, and
# at 0.8 a top-p of 0.8 would leave one token per position (121 of 256 pairs stay at 3.0).
@pytest.mark.parametrize("k, temperature, top_k, top_p",
                         [(1, 0.8, 0, 1.0), (3, 0.8, 6, 1.0), (2, 3.0, 0, 0.8)],
                         ids=["k1-bonus", "k3-topk6", "k2-topp0.8"])
def test_sampling_follows_the_target_distribution(models, k, temperature, top_k, top_p):
    """Tokens 2 and 3 come from one verification (k=1: the draft or its residual, then the bonus
    token; k=2, 3: the first two draft positions); their joint must be the target's, with top-k
    or top-p applied to both the draft's and the target's distributions."""
    prompt = [3, 1, 4, 1, 5]
    params = SamplingParams(max_tokens=k + 2, temperature=temperature, top_k=top_k, top_p=top_p,
                            ignore_eos=True)
    llm = make_llm(models, dict(method="draft", model=models["far"], num_speculative_tokens=k),
                   blocks=8192, max_num_seqs=2048, max_num_batched_tokens=16384, seed=k)
    expected = target_pair_marginal(llm, prompt, params)
    out = llm.generate([prompt] * REQUESTS[k], params, use_tqdm=False)
    pairs = torch.tensor([o.outputs[0].token_ids[1:3] for o in out])
    counts = torch.zeros(VOCAB * VOCAB, dtype=torch.int64)
    counts.index_add_(0, pairs[:, 0] * VOCAB + pairs[:, 1], torch.ones(len(out), dtype=torch.int64))
    assert chi_square_pvalue(counts, expected) > 1e-3
    m = llm.spec_decoder.metrics()
    assert m["verifications"] >= REQUESTS[k]
    assert 0.2 < m["acceptance_rate"] < 0.9  # both the accept and the reject paths were taken
    assert_no_leaks(llm)


def test_seeded_requests_replay_whatever_the_batch(models):
    llm = make_llm(models, dict(method="draft", model=models["draft"], num_speculative_tokens=3))
    seeded = SamplingParams(max_tokens=20, temperature=1.0, seed=123, ignore_eos=True)
    alone = llm.generate([[1, 2, 3]], seeded, use_tqdm=False)[0].outputs[0].token_ids
    others = SamplingParams(max_tokens=25, temperature=1.0, ignore_eos=True)
    mixed = llm.generate([[5, 5], [1, 2, 3], [7] * 30], [others, seeded, others], use_tqdm=False)
    assert mixed[1].outputs[0].token_ids == alone
    assert_no_leaks(llm)


def test_int4_self_in_bfloat16_runs_clean(models):
    """bf16 (greedy identity is not promised there: a k+1-row GEMM rounds differently from a
    1-row one); every request gets its max_tokens and nothing leaks."""
    prompts, params = batch_case(seed=2, n=6)
    llm = make_llm(models, dict(method="int4-self", num_speculative_tokens=4), blocks=128,
                   dtype="bfloat16")
    out = llm.generate(prompts, params, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in out] == [p.max_tokens for p in params]
    assert llm.spec_decoder.metrics()["acceptance_rate"] > 0.3
    assert_no_leaks(llm)


@pytest.mark.parametrize("draft_dtype, expected", [(None, torch.bfloat16), ("float32", torch.float32)])
def test_draft_dtype(models, draft_dtype, expected):
    """An fp32 target drafts in bf16 unless told otherwise; the output stays the target's."""
    spec = dict(method="int4-self", num_speculative_tokens=3)
    if draft_dtype:
        spec["draft_dtype"] = draft_dtype
    llm = make_llm(models, spec)
    draft = llm.spec_decoder.proposer.model
    assert draft.dtype == expected and draft.embed.dtype == expected
    assert all(c.dtype == expected for kv in llm.spec_decoder.proposer.runner.kv_caches for c in kv)
    prompts, params = batch_case(seed=3, n=4)
    plain = make_llm(models).generate(prompts, params, use_tqdm=False)
    out = llm.generate(prompts, params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in out] == [o.outputs[0].token_ids for o in plain]
    assert_no_leaks(llm)


def test_bad_configurations_fail_at_construction(models):
    with pytest.raises(ValueError, match="unknown method 'eagle'"):
        make_llm(models, dict(method="eagle"))
    for k in (0, 17, -1):
        with pytest.raises(ValueError, match="num_speculative_tokens must be an int in 1..16"):
            make_llm(models, dict(method="ngram", num_speculative_tokens=k))
    with pytest.raises(ValueError, match="vocabulary has 20 tokens, the target's 16"):
        make_llm(models, dict(method="draft", model=models["vocab20"]))
    with pytest.raises(ValueError, match="'int4-self' needs a target with float weights"):
        make_llm(models, dict(method="int4-self"), quantization="int4")
    with pytest.raises(ValueError, match="draft_dtype must be one of"):
        make_llm(models, dict(method="int4-self", draft_dtype="int8"))
    with pytest.raises(ValueError, match="draft_dtype must be one of"):
        make_llm(models, dict(method="ngram", draft_dtype="bfloat16"))
    with pytest.raises(FileNotFoundError):
        make_llm(models, dict(method="draft", model=models["target"] + "-missing"))

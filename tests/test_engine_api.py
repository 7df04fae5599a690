"""The LLM front end on the default model: sampling parameters, stop conditions, streaming, chat,
abort, and bad input (a clear error for that request, the others unaffected)."""
from __future__ import annotations

import collections

import pytest
import torch

from engine_common import PROMPTS, make_llm, one_thread  # noqa: F401
from pagedinfer import LLM, SamplingParams
from pagedinfer.engine.sampler import Sampler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def llm():
    return make_llm(kv_cache_memory="32MiB")


def assert_pool_free(llm):
    assert llm.block_manager.num_free_blocks == llm.block_manager.num_blocks
    assert not llm.scheduler.has_unfinished()


def test_seeded_sampling_is_reproducible_and_batch_independent(llm):
    p = SamplingParams(max_tokens=10, temperature=0.9, top_k=50, top_p=0.95, seed=1234, ignore_eos=True)
    alone = llm.generate([PROMPTS[0]], p, use_tqdm=False)[0].outputs[0].token_ids
    others = SamplingParams(max_tokens=6, temperature=1.0)
    batch = llm.generate([PROMPTS[1], PROMPTS[0], PROMPTS[2]], [others, p, others], use_tqdm=False)
    assert batch[1].outputs[0].token_ids == alone
    other_seed = SamplingParams(max_tokens=10, temperature=0.9, seed=99, ignore_eos=True)
    draws = {tuple(llm.generate([PROMPTS[0]], other_seed, use_tqdm=False)[0].outputs[0].token_ids)
             for _ in range(2)}
    assert len(draws) == 1
    assert_pool_free(llm)


def test_degenerate_sampling_equals_greedy(llm):
    greedy = llm.generate(PROMPTS[:2], SamplingParams(max_tokens=8, temperature=0), use_tqdm=False)
    for params in (SamplingParams(max_tokens=8, temperature=0.7, top_k=1, seed=5),
                   SamplingParams(max_tokens=8, temperature=0.7, top_p=1e-6, seed=5)):
        outs = llm.generate(PROMPTS[:2], params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == [g.outputs[0].token_ids for g in greedy]


def test_sampler_filters_and_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    probs = Sampler.probs(logits, SamplingParams(temperature=1.0, top_k=3))
    assert (probs[3:] == 0).all() and torch.allclose(probs[:3], torch.softmax(logits[:3], 0))
    full = torch.softmax(logits, 0)
    probs = Sampler.probs(logits, SamplingParams(temperature=1.0, top_p=0.8))
    keep = int((full.cumsum(0) - full < 0.8).sum())  # smallest prefix reaching 0.8
    assert (probs[:keep] > 0).all() and (probs[keep:] == 0).all()
    assert torch.allclose(probs.sum(), torch.tensor(1.0))
    # Drawn frequencies follow the filtered distribution (5 sigma bound per token).
    p = SamplingParams(temperature=0.5, top_k=4)
    target = Sampler.probs(logits, p)
    sampler, g, n = Sampler(), torch.Generator().manual_seed(0), 4000
    counts = collections.Counter(sampler.sample_row(logits, p, g) for _ in range(n))
    for tok in range(6):
        expected = target[tok].item() * n
        assert abs(counts[tok] - expected) <= 5 * (expected + 1) ** 0.5, (tok, counts, target)


def test_stop_conditions(llm):
    base = llm.generate([PROMPTS[6]], SamplingParams(max_tokens=20, temperature=0, ignore_eos=True),
                        use_tqdm=False)[0].outputs[0]
    assert base.finish_reason == "length" and len(base.token_ids) == 20
    # A stop token id: generation ends at it (the token is kept, its text is not).
    stop_tok = base.token_ids[5]
    out = llm.generate([PROMPTS[6]], SamplingParams(max_tokens=20, temperature=0,
                                                    stop_token_ids=[stop_tok]), use_tqdm=False)[0].outputs[0]
    first = base.token_ids.index(stop_tok)
    assert out.finish_reason == "stop" and out.token_ids == base.token_ids[: first + 1]
    # A stop string: the text is cut just before it.
    words = base.text.split()
    stop = words[min(3, len(words) - 1)]
    out = llm.generate([PROMPTS[6]], SamplingParams(max_tokens=20, temperature=0, stop=[stop]),
                       use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.text == base.text[: base.text.index(stop)]
    assert_pool_free(llm)


def test_stream_matches_generate_and_chat(llm):
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    full = llm.generate([PROMPTS[4]], params, use_tqdm=False)[0].outputs[0].text
    pieces = list(llm.stream(PROMPTS[4], params))
    assert "".join(pieces) == full and len(pieces) > 1
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    out = llm.chat(messages, SamplingParams(max_tokens=12, temperature=0), use_tqdm=False)[0]
    assert "Paris" in out.outputs[0].text
    ids = llm.apply_chat_template(messages)
    assert out.prompt_token_ids == ids and llm.tokenizer.decode(ids).count("<|im_start|>") == 3
    assert out.metrics.time_to_first_token > 0
    assert_pool_free(llm)


def test_abort_leaves_others_running(llm):
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    seqs = [llm.add_request(p, params) for p in PROMPTS[:3]]
    llm.step()
    llm.abort(seqs[1].request_id)
    while llm.scheduler.has_unfinished():
        llm.step()
    assert seqs[1].finish_reason == "abort"
    assert [s.num_output_tokens for s in (seqs[0], seqs[2])] == [8, 8]
    assert_pool_free(llm)


def test_bad_requests_fail_alone(llm):
    params = SamplingParams(max_tokens=4, temperature=0)
    outs = llm.generate(["", PROMPTS[0], [0] * (llm.max_model_len + 3), [1, 10**9],
                         "Hi", [5, 6, 7]],
                        [params, params, params, params, SamplingParams(max_tokens=10**7), params],
                        use_tqdm=False)
    reasons = [o.outputs[0].finish_reason for o in outs]
    assert reasons[1] in ("length", "stop") and reasons[5] in ("length", "stop")
    assert [reasons[i] for i in (0, 2, 3, 4)] == ["error"] * 4
    assert "empty" in outs[0].error
    assert "limit" in outs[2].error
    assert "vocabulary" in outs[3].error
    assert "KV blocks" in outs[4].error
    assert_pool_free(llm)
    with pytest.raises(ValueError, match="empty"):
        list(llm.stream("", params))


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_tokens=0), "max_tokens"), (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_k=-2), "top_k"), (dict(stop=[""]), "stop"),
    (dict(stop_token_ids=[-1]), "stop_token_ids"), (dict(seed="x"), "seed"),
])
def test_invalid_sampling_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_bad_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLM(str(tmp_path / "missing.gguf"), progress=False)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(ValueError, match="GGUF"):
        LLM(str(corrupt), progress=False)
    gguf = pytest.importorskip("gguf")
    other = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(other), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="unsupported GGUF architecture 'gpt2'"):
        LLM(str(other), progress=False)
    with pytest.raises(ValueError, match="dtype"):
        LLM(dtype="int8", progress=False)


def test_max_model_len_ends_generation():
    llm = make_llm(max_model_len=24)
    prompt = list(range(1000, 1020))
    out = llm.generate([prompt], SamplingParams(max_tokens=50, temperature=0, ignore_eos=True),
                       use_tqdm=False)[0]
    assert out.outputs[0].finish_reason == "length" and len(out.outputs[0].token_ids) == 4
    assert_pool_free(llm)

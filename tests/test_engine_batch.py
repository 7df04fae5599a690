"""Batch invariance of the whole engine on the default model (fp32, greedy): a request's output
does not depend on what else runs with it, on prefix caching, chunked prefill, or preemption;
and every run leaves the block pool fully free."""
from __future__ import annotations

import pytest

from engine_common import PROMPTS, loaded_model, make_llm, one_thread, tokenizer  # noqa: F401
from pagedinfer import SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
SYSTEM = ("You are a careful assistant. Answer briefly and precisely, and say so when you do not "
          "know something. Never invent facts. ")


def assert_pool_free(llm):
    bm = llm.block_manager
    assert bm.num_free_blocks == bm.num_blocks and not llm.scheduler.has_unfinished()


@pytest.fixture(scope="module")
def prompts():
    tok = tokenizer()
    ids = [tok(p)["input_ids"] for p in PROMPTS[:6]]
    ids += [tok(SYSTEM + q)["input_ids"] for q in ("What is 2+2?", "Name a planet.", "Say hi.")]
    return ids


@pytest.fixture(scope="module")
def alone(prompts):
    llm = make_llm(enable_prefix_caching=False)
    out = [llm.generate([p], GREEDY, use_tqdm=False)[0].outputs[0].token_ids for p in prompts]
    assert_pool_free(llm)
    return out


def test_batch_of_mixed_lengths_matches_alone(prompts, alone):
    llm = make_llm(enable_prefix_caching=False)
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == alone
    assert all(o.outputs[0].finish_reason == "length" for o in outs)
    assert_pool_free(llm)


def test_prefix_caching_shares_system_prompt(prompts, alone):
    llm = make_llm(enable_prefix_caching=True, block_size=8)
    first = llm.generate(prompts[-3:-2], GREEDY, use_tqdm=False)  # caches the system prompt
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert first[0].outputs[0].token_ids == alone[-3]
    assert [o.outputs[0].token_ids for o in outs] == alone
    cached = [o.metrics.num_cached_tokens for o in outs[-3:]]
    assert all(c >= 16 for c in cached), cached  # the shared system prompt was not recomputed
    assert llm.block_manager.prefix_hit_rate > 0
    assert_pool_free(llm)


def test_chunked_prefill_matches(prompts, alone):
    llm = make_llm(max_num_batched_tokens=7, block_size=4)
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == alone
    assert_pool_free(llm)


def test_tiny_pool_preempts_and_matches(prompts, alone):
    from pagedinfer.engine.runner import kv_bytes_per_block

    model = loaded_model()
    block = kv_bytes_per_block(model.config, 4, model.dtype)
    longest = max(len(p) for p in prompts) + GREEDY.max_tokens
    llm = make_llm(kv_cache_memory=block * (-(-longest // 4) + 2), block_size=4)
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert llm.scheduler.num_preemptions > 0
    assert [o.outputs[0].token_ids for o in outs] == alone
    assert sum(o.metrics.num_preemptions for o in outs) == llm.scheduler.num_preemptions
    assert_pool_free(llm)

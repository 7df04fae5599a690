"""Loading HF safetensors folders: tiny random Llama (with Llama-3 RoPE scaling), Qwen2 (Q/K/V
biases) and Mistral (sliding window) models written by transformers, run through pagedinfer's
model and compared with transformers' own forward pass; and quantization on load."""
from __future__ import annotations

import pytest
import torch

from engine_common import one_thread  # noqa: F401
from pagedinfer.engine.block_manager import BlockManager
from pagedinfer.engine.runner import ModelRunner
from pagedinfer.engine.scheduler import ScheduledBatch
from pagedinfer.engine.params import SamplingParams
from pagedinfer.engine.sequence import Sequence
from pagedinfer.loader import load_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
             vocab_size=200, num_hidden_layers=2, max_position_embeddings=64)
MODELS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
                   rope_theta=500.0)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(sliding_window=7)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def hf_folder(request, tmp_path_factory):
    config_cls, model_cls, extra = MODELS[request.param]
    torch.manual_seed(0)
    model = model_cls(config_cls(**SHAPE, **extra, attn_implementation="eager")).eval()
    if request.param == "qwen2":  # random biases, so that a dropped bias shows
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, str(path)


def run_logits(model, prompts: list[list[int]]) -> torch.Tensor:
    """Every position's logits for the prompts in one varlen step through the paged cache."""
    bm = BlockManager(64, 4)
    runner = ModelRunner(model, 64, 4, torch.device("cpu"))
    seqs = [Sequence(str(i), p, SamplingParams()) for i, p in enumerate(prompts)]
    for s in seqs:
        bm.allocate(s, s.num_tokens)
    return runner.logits_all(ScheduledBatch(seqs, [s.num_tokens for s in seqs]))


def test_matches_transformers(hf_folder):
    arch, hf, path = hf_folder
    model, _ = load_model(path, torch.float32, progress=False)
    assert model.config.architecture == arch
    prompts = [torch.randint(0, 200, (n,)).tolist() for n in (23, 1, 9)]
    ours = run_logits(model, prompts)
    with torch.inference_mode():
        ref = torch.cat([hf(torch.tensor([p])).logits[0] for p in prompts])
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_weights_share_buffers(hf_folder):
    """load_model moves the projections' tensors (packed weights, biases) into shared buffers
    (on huge pages where granted), batch_bytes at a time; test_matches_transformers checks the
    values survive the move."""
    _, _, path = hf_folder

    def storages(model):
        tensors = []
        for lin in model._linears():
            w = lin.weight
            tensors += [w] if isinstance(w, torch.Tensor) else list(w.buffers())
            tensors += [] if lin.bias is None else [lin.bias]
        assert all(t.is_contiguous() and t.data_ptr() % 64 == 0 for t in tensors)
        return len({t.untyped_storage().data_ptr() for t in tensors}), len(tensors)

    for quantization in (None, "int4"):
        model, _ = load_model(path, torch.float32, quantization=quantization, progress=False)
        assert storages(model)[0] == 1  # a tiny model: one batch
        prompts = [torch.randint(0, 200, (9,)).tolist()]
        before = run_logits(model, prompts)
        model.place_weights_on_huge_pages(batch_bytes=1)  # one tensor per buffer
        n_storages, n_tensors = storages(model)
        assert n_storages == n_tensors
        torch.testing.assert_close(run_logits(model, prompts), before, atol=0, rtol=0)


def test_quantize_on_load(hf_folder):
    from pagedinfer.quant import Int4Weight, Int8Weight

    arch, hf, path = hf_folder
    prompts = [torch.randint(0, 200, (17,)).tolist()]
    with torch.inference_mode():
        ref = hf(torch.tensor(prompts)).logits[0]
    for kind, cls, tol in (("int8", Int8Weight, 0.02), ("int4", Int4Weight, 0.25)):
        model, _ = load_model(path, torch.float32, quantization=kind, progress=False)
        assert isinstance(model.layers[0].qkv.weight, cls)
        ours = run_logits(model, prompts)
        rel = ((ours - ref).norm() / ref.norm()).item()
        assert rel < tol, f"{arch} {kind}: relative logits error {rel:.3f}"


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path), torch.float32, progress=False)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
        load_model(str(tmp_path), torch.float32, progress=False)

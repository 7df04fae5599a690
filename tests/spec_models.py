"""Tiny random Llama models for the speculative-decoding tests, written as HF folders
(config.json + model.safetensors + a word-level tokenizer) so they load like any model."""
from __future__ import annotations

import json
import os

import torch

VOCAB = 16


def write_tiny_llama(path: str, seed: int, vocab: int = VOCAB, layers: int = 2, hidden: int = 64,
                     heads: int = 4, kv_heads: int = 2, ffn: int = 128, scale: float = 1.0,
                     base: dict | None = None, noise: float = 0.0) -> dict:
    """Writes a random model (or `base`'s weights plus noise * N(0, 1): a draft that agrees with
    it often) and returns its state dict. Sizes are multiples of 32 so INT4 (group 32) applies."""
    os.makedirs(path, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    head_dim = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
            p + "mlp.down_proj.weight": (hidden, ffn),
        })
    state = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            w = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            w = torch.randn(shape, generator=gen) * (scale / shape[1] ** 0.5)
            if name == "lm_head.weight":
                w = w * 3.0  # logits with a few units of spread: neither flat nor one-hot
        if base is not None:
            w = base[name] + noise * torch.randn(shape, generator=gen) * base[name].std()
        state[name] = w.contiguous()
    from safetensors.torch import save_file

    save_file(state, os.path.join(path, "model.safetensors"))
    config = {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "intermediate_size": ffn, "vocab_size": vocab, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "max_position_embeddings": 256,
              "tie_word_embeddings": False, "eos_token_id": None, "bos_token_id": None}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    _write_tokenizer(path, vocab)
    return state


def _write_tokenizer(path: str, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {chr(ord("a") + i) if i < 26 else f"w{i}": i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(path)

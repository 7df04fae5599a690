"""The Llama family (Llama 2/3, SmolLM, Mistral, Qwen2) on pagedinfer's ops.

Per layer and step, ten calls: add + RMSNorm, one fused QKV GEMM, RoPE on Q and K together (in
place in the QKV output), store K/V in the paged cache, paged attention, output GEMM, add +
RMSNorm, one fused gate/up GEMM, SiLU * up, down GEMM. All sequences of a step are flattened into T tokens (varlen), so prefill, decode and chunked
prefill are the same code. Weights are loaded by pagedinfer.loader; Q and K rows use the
half-split RoPE layout (HF's), GGUF files are un-permuted on load.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import pagedinfer.ops as ops
from pagedinfer.memory import pack_on_huge_pages
from pagedinfer.models.config import ModelConfig
from pagedinfer.models.layers import (AttentionMetadata, Linear, add_rms_norm, rms_norm,
                                      rope_inv_freq, rope_tables, rotary_embedding, silu_and_mul)


class LlamaLayer:
    def __init__(self, config: ModelConfig, weights: dict):
        """weights: attn_norm, ffn_norm [H]; qkv, o, gate_up, down: Linear (qkv rows are
        [q (Hq*D) | k (Hkv*D) | v (Hkv*D)], gate_up rows [gate (I) | up (I)])."""
        c = config
        self.attn_norm, self.ffn_norm = weights["attn_norm"], weights["ffn_norm"]
        self.qkv, self.o = weights["qkv"], weights["o"]
        self.gate_up, self.down = weights["gate_up"], weights["down"]
        self.eps = c.rms_norm_eps
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.q_size, self.kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.intermediate = c.intermediate_size
        self.scale = c.head_dim ** -0.5
        self.sliding_window = c.sliding_window

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, cos: torch.Tensor,
                sin: torch.Tensor, meta: AttentionMetadata, key_cache: torch.Tensor,
                value_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [T, H] this layer's input delta, residual: [T, H] the stream before it (None in
        layer 0, where x is the embedding). Returns (delta, residual) for the next layer; both
        may be updated in place."""
        T = x.shape[0]
        if residual is None:
            residual, h = x, rms_norm(x, self.attn_norm, self.eps)
        else:
            h, residual = add_rms_norm(x, residual, self.attn_norm, self.eps)
        qkv = self.qkv(h)
        if qkv.is_cpu:  # RoPE, cache write and attention in one op (one dispatch, not eleven)
            attn = ops.rope_cache_attention(qkv, meta.positions, cos, sin, key_cache, value_cache,
                                            meta.slot_mapping, meta.query_start_loc, meta.seq_lens,
                                            meta.block_tables, self.num_heads, scale=self.scale,
                                            sliding_window=self.sliding_window)
        else:
            qk = rotary_embedding(meta.positions,
                                  qkv[:, : self.q_size + self.kv_size].view(T, -1, self.head_dim),
                                  cos, sin)
            v = qkv[:, self.q_size + self.kv_size:].view(T, self.num_kv_heads, self.head_dim)
            q, k = qk[:, : self.num_heads], qk[:, self.num_heads:]
            ops.reshape_and_cache(k, v, key_cache, value_cache, meta.slot_mapping)
            attn = ops.paged_attention(q, key_cache, value_cache, meta.query_start_loc,
                                       meta.seq_lens, meta.block_tables, scale=self.scale,
                                       sliding_window=self.sliding_window).view(T, self.q_size)
        h, residual = add_rms_norm(self.o(attn), residual, self.ffn_norm, self.eps)
        return self.down(silu_and_mul(self.gate_up(h))), residual


class LlamaModel:
    def __init__(self, config: ModelConfig, weights: dict, dtype: torch.dtype,
                 max_positions: int, rope_freq_factors: torch.Tensor | None = None):
        """weights: embed [V, H] float (the lookup table), norm [H], lm_head Linear, layers: list
        of per-layer dicts (see LlamaLayer)."""
        self.config = config
        self.dtype = dtype
        self.embed = weights["embed"]
        self.norm = weights["norm"]
        self.lm_head: Linear = weights["lm_head"]
        self.layers = [LlamaLayer(config, w) for w in weights["layers"]]
        inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling,
                                 rope_freq_factors)
        self.cos, self.sin = rope_tables(inv_freq, max_positions)  # fp32 [max_positions, D]

    def forward(self, input_ids: torch.Tensor, meta: AttentionMetadata,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """input_ids: int64 [T] -> final hidden states [T, H] (normed)."""
        x = F.embedding(input_ids, self.embed)
        residual = None
        for layer, (key_cache, value_cache) in zip(self.layers, kv_caches):
            x, residual = layer.forward(x, residual, self.cos, self.sin, meta, key_cache,
                                        value_cache)
        return add_rms_norm(x, residual, self.norm, self.config.rms_norm_eps)[0]

    def _linears(self) -> list:
        return [self.lm_head] + [getattr(layer, n) for layer in self.layers
                                 for n in ("qkv", "o", "gate_up", "down")]

    def place_weights_on_huge_pages(self, batch_bytes: int = 64 << 20) -> None:
        """CPU: moves the projections' weights and biases into buffers on huge pages
        (pagedinfer.memory.pack_on_huge_pages: each decode step streams them all once), about
        batch_bytes at a time, so that loading needs only that much memory on top."""
        slots = []  # (owner, attribute name) of each tensor
        for lin in self._linears():
            if isinstance(lin.weight, torch.Tensor):
                slots.append((lin, "weight"))
            else:  # Int4Weight / Int8Weight: their packed buffers
                slots += [(lin.weight, name) for name, _ in lin.weight.named_buffers()]
            if lin.bias is not None:
                slots.append((lin, "bias"))
        if any(getattr(owner, name).device.type != "cpu" for owner, name in slots):
            raise ValueError("place_weights_on_huge_pages: the weights must be on the CPU")
        while slots:
            batch, size = [], 0
            while slots and (not batch or size < batch_bytes):
                owner, name = slots.pop(0)
                t = getattr(owner, name)
                batch.append((owner, name, t))
                size += t.numel() * t.element_size()
            for (owner, name, _), t in zip(batch, pack_on_huge_pages([t for *_, t in batch])):
                setattr(owner, name, t)

    def to(self, device: torch.device) -> "LlamaModel":
        """Moves every weight (float tensors and quantized weight modules) to device."""
        def move(x):
            return None if x is None else x.to(device)

        self.embed, self.norm, self.cos, self.sin = map(move, (self.embed, self.norm, self.cos, self.sin))
        for lin in self._linears():
            lin.weight, lin.bias = move(lin.weight), move(lin.bias)
        for layer in self.layers:
            layer.attn_norm, layer.ffn_norm = move(layer.attn_norm), move(layer.ffn_norm)
        return self

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [S, H] -> logits [S, vocab] in the activation dtype. Not converted to fp32
        here: greedy argmax is the same on bf16 logits, the sampler widens the rows it samples,
        and at batch 1 an [S, vocab] conversion is a parallel aten op that costs more than the
        head itself on a busy 2-core machine."""
        return self.lm_head(hidden)

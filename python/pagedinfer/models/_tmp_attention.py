"""TEMP: pure-torch paged attention until the attn branch lands."""
import torch


def paged_attention(query, key_cache, value_cache, query_start_loc, seq_lens, block_tables, *,
                    scale=None, sliding_window=None, out=None):
    T, Hq, D = query.shape
    Hkv = key_cache.shape[2]
    bs = key_cache.shape[1]
    scale = scale or D ** -0.5
    outs = []
    qsl = query_start_loc.tolist()
    for i, L in enumerate(seq_lens.tolist()):
        q = query[qsl[i]:qsl[i + 1]].float()
        n = q.shape[0]
        nb = -(-L // bs)
        blocks = block_tables[i, :nb].long()
        k = key_cache[blocks].reshape(-1, Hkv, D)[:L].float()
        v = value_cache[blocks].reshape(-1, Hkv, D)[:L].float()
        k = k.repeat_interleave(Hq // Hkv, 1)
        v = v.repeat_interleave(Hq // Hkv, 1)
        s = torch.einsum("qhd,khd->hqk", q, k) * scale
        pos = torch.arange(L - n, L)[:, None]
        kpos = torch.arange(L)[None, :]
        mask = kpos > pos
        if sliding_window:
            mask |= kpos <= pos - sliding_window
        s = s.masked_fill(mask, float("-inf"))
        outs.append(torch.einsum("hqk,khd->qhd", s.softmax(-1), v))
    return torch.cat(outs).to(query.dtype)

"""`pagedinfer bench layers`: the fused per-layer ops against the PyTorch ops they replace, at a
decode shape (1 row: call overhead dominates, which is why they are fused) and a prefill shape
(512 rows: bandwidth). Shapes are SmolLM2-135M's (hidden 576, FFN 1536, 9 + 3 heads of 64).
Bytes: every operand read once and every output written once."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import pagedinfer.ops as ops
from pagedinfer.bench.core import BenchContext, Row, suite

HIDDEN, FFN, HEADS, HEAD_DIM = 576, 1536, 12, 64


def _cases(ctx: BenchContext, rows: list[Row], R: int, dtype: torch.dtype) -> None:
    name, elem = "layers", torch.tensor([], dtype=dtype).element_size()
    tag = f"R={R} {str(dtype)[6:]}"
    x, res, w = torch.randn(R, HIDDEN).to(dtype), torch.randn(R, HIDDEN).to(dtype), torch.randn(HIDDEN).to(dtype)
    base = ctx.row(name, f"add + rms_norm {tag}", "torch add + F.rms_norm",
                   ctx.time(lambda i: F.rms_norm(res + x, (HIDDEN,), w, 1e-5)),
                   bytes=4 * R * HIDDEN * elem, limit="copy_gbps")
    ours = ctx.row(name, f"add + rms_norm {tag}", "pagedinfer",
                   ctx.time(lambda i: ops.fused_add_rms_norm(x, res, w, 1e-5)),
                   bytes=4 * R * HIDDEN * elem, limit="copy_gbps", baseline=base)
    rows += [ours, base]
    gu = torch.randn(R, 2 * FFN).to(dtype)
    base = ctx.row(name, f"silu_and_mul {tag}", "torch F.silu * up",
                   ctx.time(lambda i: F.silu(gu[:, :FFN]) * gu[:, FFN:]),
                   bytes=3 * R * FFN * elem, limit="copy_gbps")
    ours = ctx.row(name, f"silu_and_mul {tag}", "pagedinfer", ctx.time(lambda i: ops.silu_and_mul(gu)),
                   bytes=3 * R * FFN * elem, limit="copy_gbps", baseline=base)
    rows += [ours, base]
    qk = torch.randn(R, HEADS, HEAD_DIM).to(dtype)
    pos = torch.randint(0, 1024, (R,))
    cos, sin = torch.randn(1024, HEAD_DIM), torch.randn(1024, HEAD_DIM)

    def torch_rope(i):
        c, s = cos[pos].unsqueeze(1).to(dtype), sin[pos].unsqueeze(1).to(dtype)
        return torch.addcmul(qk * c, torch.roll(qk, HEAD_DIM // 2, -1), s)

    moved = 2 * R * HEADS * HEAD_DIM * elem
    base = ctx.row(name, f"rotary_embedding {tag}", "torch gather + roll + addcmul",
                   ctx.time(torch_rope), bytes=moved, limit="copy_gbps")
    ours = ctx.row(name, f"rotary_embedding {tag}", "pagedinfer",
                   ctx.time(lambda i: ops.rotary_embedding(pos, qk, cos, sin)), bytes=moved,
                   limit="copy_gbps", baseline=base)
    rows += [ours, base]


@suite("layers")
def layers_suite(ctx: BenchContext) -> list[Row]:
    rows: list[Row] = []
    for R in (1, 512):
        for dtype in (torch.float32, torch.bfloat16):
            _cases(ctx, rows, R, dtype)
    return rows

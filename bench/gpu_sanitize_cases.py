"""Small cases of every CUDA kernel, for compute-sanitizer (memcheck, racecheck) in gpu_check.sh:
small enough to run in seconds under instrumentation, shaped to reach every code path (split-K
with empty and partial partitions, merge, reference kernels, odd head sizes, GEMM split-K and
partial slabs, the large-M dequantize path, the cache ops)."""
import torch

import pagedinfer
import pagedinfer.ops as ops
from pagedinfer.quant import Int4Weight, Int8Weight


def attention(dtype, D, Hq, Hkv, specs, block_size, window=None):
    need = [(s + block_size - 1) // block_size for _, s in specs]
    max_blocks = max(need) + 2
    kc = torch.randn(sum(need) + 1, block_size, Hkv, D, device="cuda").to(dtype)
    vc = torch.randn_like(kc)
    ids = torch.randperm(kc.shape[0]).tolist()
    tables = torch.full((len(specs), max_blocks), -1, dtype=torch.int32)
    for i, n in enumerate(need):
        tables[i, :n] = torch.tensor(ids[:n], dtype=torch.int32)
        ids = ids[n:]
    qsl = [0]
    for q_len, _ in specs:
        qsl.append(qsl[-1] + q_len)
    q = torch.randn(qsl[-1], Hq, D, device="cuda").to(dtype)
    out = ops.paged_attention(q, kc, vc, torch.tensor(qsl, dtype=torch.int32, device="cuda"),
                              torch.tensor([s for _, s in specs], dtype=torch.int32, device="cuda"),
                              tables.cuda(), sliding_window=window)
    assert torch.isfinite(out.float()).all()


def linear(bits, dtype, M, N, K, G):
    w = torch.randn(N, K)
    qw = (Int4Weight.quantize(w, G) if bits == 4 else Int8Weight.quantize(w, G)).to("cuda")
    x = torch.randn(M, K, device="cuda").to(dtype)
    bias = torch.randn(N, device="cuda").to(dtype)
    y = ops.int4_linear(x, qw, bias) if bits == 4 else ops.int8_linear(x, qw, bias)
    assert y.shape == (M, N) and torch.isfinite(y.float()).all()


def main():
    specs = [(1, 1100), (1, 1), (3, 40), (0, 5), (1, 530)]
    for impl in ("fast", "reference"):
        pagedinfer._C.set_cuda_impl(impl)
        attention(torch.bfloat16, 128, 8, 2, specs, 16)
        attention(torch.float32, 80, 6, 3, specs, 7, window=300)
        attention(torch.float16, 256, 4, 4, specs[:3], 32)
        attention(torch.bfloat16, 64, 9, 3, specs, 16)
        linear(4, torch.bfloat16, 19, 130, 384, 64)
        linear(8, torch.float16, 3, 72, 4096, 128)
    pagedinfer._C.set_cuda_impl("fast")
    attention(torch.bfloat16, 33, 4, 2, specs, 16)  # odd head size: reference kernel
    linear(4, torch.float16, 1, 8, 32, 32)
    linear(4, torch.bfloat16, 70, 64, 256, 32)  # large M: dequantize + cuBLAS
    linear(8, torch.float32, 5, 64, 256, 32)  # fp32: dequantize + cuBLAS
    kc = torch.zeros(6, 16, 2, 64, device="cuda", dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    key = torch.randn(19, 2, 64, device="cuda", dtype=torch.bfloat16)
    slots = torch.randperm(96, device="cuda")[:19]
    slots[::5] = -1
    ops.reshape_and_cache(key, key, kc, vc, slots)
    ops.copy_blocks([kc], [vc], torch.tensor([[0, 3], [1, 4]], device="cuda"))
    host = torch.zeros(6, 16, 2, 64, dtype=torch.bfloat16).pin_memory()
    ops.swap_blocks(kc, host, torch.tensor([[0, 1], [3, 5]]))
    torch.cuda.synchronize()
    print("gpu_sanitize_cases: ok")


if __name__ == "__main__":
    main()

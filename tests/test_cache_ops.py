"""reshape_and_cache, copy_blocks, swap_blocks against tests/reference.py."""
from __future__ import annotations

import pytest
import torch

import pagedinfer
import pagedinfer.ops as ops
from conftest import DEVICES, DTYPES
import reference as ref


def random_cache(num_blocks, block_size, heads, head_dim, dtype, device):
    return torch.randn(num_blocks, block_size, heads, head_dim, device=device).to(dtype)


def scattered_slots(T, num_blocks, block_size, device, skip_every=0):
    """Distinct slots spread over shuffled blocks; every skip_every-th token gets -1."""
    slots = torch.randperm(num_blocks * block_size)[:T]
    if skip_every:
        slots[::skip_every] = -1
    return slots.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,block_size,heads,head_dim", [
    (1, 1, 1, 64), (3, 8, 3, 80), (19, 16, 8, 128), (111, 32, 3, 64), (1000, 16, 1, 128),
    (19, 1, 8, 80),
])
@pytest.mark.parametrize("isa", ["best", "scalar"])
def test_reshape_and_cache(device, dtype, T, block_size, heads, head_dim, isa):
    pagedinfer._C.set_cpu_isa(isa)
    try:
        num_blocks = (T + block_size - 1) // block_size + 5
        key = torch.randn(T, heads, head_dim, device=device).to(dtype)
        value = torch.randn(T, heads, head_dim, device=device).to(dtype)
        key_cache = random_cache(num_blocks, block_size, heads, head_dim, dtype, device)
        value_cache = random_cache(num_blocks, block_size, heads, head_dim, dtype, device)
        slots = scattered_slots(T, num_blocks, block_size, device, skip_every=7 if T > 7 else 0)
        want_k, want_v = key_cache.clone(), value_cache.clone()
        ref.reshape_and_cache(key, value, want_k, want_v, slots)
        ops.reshape_and_cache(key, value, key_cache, value_cache, slots)
        # Bit-identical everywhere: written slots hold the inputs, all others are untouched.
        assert torch.equal(key_cache, want_k)
        assert torch.equal(value_cache, want_v)
    finally:
        pagedinfer._C.set_cpu_isa("best")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_and_cache_strided_inputs(device, dtype):
    """K and V as slices of a fused QKV projection [T, (Hq + 2 Hkv) * D], and a non-contiguous D."""
    T, Hq, Hkv, D, block_size = 37, 6, 2, 64, 16
    qkv = torch.randn(T, (Hq + 2 * Hkv) * D, device=device).to(dtype)
    key = qkv[:, Hq * D:(Hq + Hkv) * D].view(T, Hkv, D)
    value = qkv[:, (Hq + Hkv) * D:].view(T, Hkv, D)
    assert not key.is_contiguous()
    key_cache = random_cache(8, block_size, Hkv, D, dtype, device)
    value_cache = random_cache(8, block_size, Hkv, D, dtype, device)
    slots = scattered_slots(T, 8, block_size, device)
    want_k, want_v = key_cache.clone(), value_cache.clone()
    ref.reshape_and_cache(key, value, want_k, want_v, slots)
    ops.reshape_and_cache(key, value, key_cache, value_cache, slots)
    assert torch.equal(key_cache, want_k) and torch.equal(value_cache, want_v)
    # Last dim strided (every other element): copied to contiguous first, same result.
    wide = torch.randn(T, Hkv, 2 * D, device=device).to(dtype)
    key2 = wide[..., ::2]
    ops.reshape_and_cache(key2, key2, key_cache, value_cache, slots)
    ref.reshape_and_cache(key2, key2, want_k, want_v, slots)
    assert torch.equal(key_cache, want_k) and torch.equal(value_cache, want_v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers,pairs,block_size", [(1, 1, 1), (3, 5, 8), (2, 19, 16), (4, 64, 32)])
def test_copy_blocks(device, dtype, layers, pairs, block_size):
    num_blocks = 2 * pairs + 3
    key_caches = [random_cache(num_blocks, block_size, 3, 80, dtype, device) for _ in range(layers)]
    value_caches = [random_cache(num_blocks, block_size, 3, 80, dtype, device) for _ in range(layers)]
    perm = torch.randperm(num_blocks)[: 2 * pairs]
    mapping = torch.stack([perm[:pairs], perm[pairs:]], dim=1)
    want_k = [c.clone() for c in key_caches]
    want_v = [c.clone() for c in value_caches]
    ref.copy_blocks(want_k, want_v, mapping)
    ops.copy_blocks(key_caches, value_caches, mapping)
    for got, want in zip(key_caches + value_caches, want_k + want_v):
        assert torch.equal(got, want)


@pytest.mark.parametrize("src_device", DEVICES)
@pytest.mark.parametrize("dst_device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_swap_blocks(src_device, dst_device, dtype):
    src = random_cache(11, 16, 3, 64, dtype, src_device)
    dst = random_cache(7, 16, 3, 64, dtype, dst_device)
    mapping = torch.tensor([[10, 0], [3, 6], [0, 2], [5, 5]])
    want = dst.clone()
    ref.swap_blocks(src, want, mapping)
    ops.swap_blocks(src, dst, mapping)
    if dst.is_cuda:
        torch.cuda.synchronize()
    assert torch.equal(dst, want)


# ---- bad input: a clear error naming the argument, and nothing written -----------------------

def _cache_pair(dtype=torch.float32, num_blocks=4, block_size=16, heads=2, head_dim=64):
    return (random_cache(num_blocks, block_size, heads, head_dim, dtype, "cpu"),
            random_cache(num_blocks, block_size, heads, head_dim, dtype, "cpu"))


@pytest.mark.parametrize("mutate,error,pattern", [
    (lambda a: a.update(slot_mapping=torch.tensor([0, 64, 1])), IndexError, r"slot_mapping\[1\] = 64 is out of range"),
    (lambda a: a.update(slot_mapping=torch.tensor([0, -2, 1])), IndexError, r"slot_mapping\[1\] = -2"),
    (lambda a: a.update(slot_mapping=torch.tensor([0, 1, 2], dtype=torch.int32)), ValueError, r"slot_mapping must have dtype Long, got Int"),
    (lambda a: a.update(slot_mapping=torch.tensor([0, 1])), ValueError, r"slot_mapping.size\(0\) \(T, from key\) must be 3, got 2"),
    (lambda a: a.update(key=a["key"].to(torch.bfloat16)), ValueError, r"key and value must have the same dtype"),
    (lambda a: a.update(key=a["key"][:, :1], value=a["value"][:, :1]), ValueError, r"key_cache.size\(2\) \(Hkv, from key\) must be 1, got 2"),
    (lambda a: a.update(key=a["key"].reshape(3, 128)), ValueError, r"key must have 3 dims \[T, Hkv, D\], got 2 dims"),
    (lambda a: a.update(key_cache=a["key_cache"][0]), ValueError, r"key_cache must have 4 dims"),
    (lambda a: a.update(value_cache=a["value_cache"][:2]), ValueError, r"value_cache must have the shape of key_cache"),
    (lambda a: a.update(key_cache=a["key_cache"].transpose(1, 2)), ValueError, r"key_cache\.size\(2\)|key_cache must be contiguous"),
    (lambda a: a.update(key_cache=a["key_cache"].to(torch.int32), value_cache=a["value_cache"].to(torch.int32)), ValueError, r"key_cache must have dtype Float or BFloat16 or Half, got Int"),
    (lambda a: a.update(key_cache=a["key_cache"].to(torch.float16), value_cache=a["value_cache"].to(torch.float16)), ValueError, r"key and key_cache must have the same dtype, got Float and Half"),
])
def test_reshape_and_cache_bad_input(mutate, error, pattern):
    key_cache, value_cache = _cache_pair()
    args = dict(key=torch.randn(3, 2, 64), value=torch.randn(3, 2, 64), key_cache=key_cache,
                value_cache=value_cache, slot_mapping=torch.tensor([0, 5, 1]))
    mutate(args)
    before = (args["key_cache"].clone(), args["value_cache"].clone())
    with pytest.raises(error, match=pattern):
        ops.reshape_and_cache(**args)
    assert torch.equal(args["key_cache"], before[0]) and torch.equal(args["value_cache"], before[1])


@pytest.mark.parametrize("mapping,error,pattern", [
    (torch.tensor([[0, 1], [4, 2]]), IndexError, r"block_mapping\[1, 0\] = 4 is not a source block id in \[0, 4\)"),
    (torch.tensor([[0, -1]]), IndexError, r"block_mapping\[0, 1\] = -1"),
    (torch.tensor([[0, 1, 2]]), ValueError, r"block_mapping.size\(1\) \(a \(src, dst\) pair\) must be 2, got 3"),
    (torch.tensor([0, 1]), ValueError, r"block_mapping must have 2 dims"),
    (torch.tensor([[0, 1]], dtype=torch.int32), ValueError, r"block_mapping must have dtype Long"),
])
def test_copy_blocks_bad_input(mapping, error, pattern):
    key_cache, value_cache = _cache_pair()
    before = (key_cache.clone(), value_cache.clone())
    with pytest.raises(error, match=pattern):
        ops.copy_blocks([key_cache], [value_cache], mapping)
    assert torch.equal(key_cache, before[0]) and torch.equal(value_cache, before[1])


def test_copy_blocks_mismatched_layers():
    k, v = _cache_pair()
    with pytest.raises(ValueError, match=r"one tensor per layer each, got 2 and 1"):
        ops.copy_blocks([k, k.clone()], [v], torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"value_caches\[0\] must have the shape of key_caches\[0\]"):
        ops.copy_blocks([k], [v[:2]], torch.tensor([[0, 1]]))


def test_swap_blocks_bad_input():
    src, _ = _cache_pair(num_blocks=4)
    dst, _ = _cache_pair(num_blocks=2)
    before = dst.clone()
    with pytest.raises(IndexError, match=r"block_mapping\[0, 1\] = 2 is not a destination block id in \[0, 2\)"):
        ops.swap_blocks(src, dst, torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match=r"dst must have the block shape of src"):
        ops.swap_blocks(src, torch.zeros(2, 16, 2, 32), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"src and dst must have the same dtype"):
        ops.swap_blocks(src, dst.to(torch.bfloat16), torch.tensor([[0, 1]]))
    assert torch.equal(dst, before)


# ---- PyTorch custom-op machinery ----------------------------------------------------------------

def test_opcheck_cache_ops():
    key_cache, value_cache = _cache_pair()
    slots = torch.tensor([3, -1, 40, 7])
    torch.library.opcheck(torch.ops.pagedinfer.reshape_and_cache,
                          (torch.randn(4, 2, 64), torch.randn(4, 2, 64), key_cache, value_cache, slots))
    torch.library.opcheck(torch.ops.pagedinfer.copy_blocks,
                          ([key_cache], [value_cache], torch.tensor([[0, 1], [2, 3]])))
    torch.library.opcheck(torch.ops.pagedinfer.swap_blocks,
                          (key_cache, value_cache.clone(), torch.tensor([[0, 1], [3, 2]])))


def test_reshape_and_cache_under_torch_compile():
    key_cache, value_cache = _cache_pair()
    want_k, want_v = key_cache.clone(), value_cache.clone()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(k, v, kc, vc, slots):
        ops.reshape_and_cache(k * 2, v, kc, vc, slots)
        return kc.sum()

    k, v = torch.randn(4, 2, 64), torch.randn(4, 2, 64)
    slots = torch.tensor([3, -1, 40, 7])
    step(k, v, key_cache, value_cache, slots)
    ref.reshape_and_cache(k * 2, v, want_k, want_v, slots)
    assert torch.equal(key_cache, want_k) and torch.equal(value_cache, want_v)

"""pagedinfer.memory: huge-page-backed host buffers behave as ordinary tensors."""
from __future__ import annotations

import pytest
import torch

from pagedinfer.memory import HUGE_PAGE, empty_huge, zeros_huge


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
@pytest.mark.parametrize("shape", [(3, 5), (7, 2, 16, 3, 64), (5, HUGE_PAGE // 4 + 3)])
def test_zeros_huge(shape, dtype):
    t = zeros_huge(shape, dtype)
    assert t.shape == shape and t.dtype == dtype and t.is_contiguous() and t.device.type == "cpu"
    assert (t == 0).all()
    nbytes = t.numel() * t.element_size()
    if nbytes >= 2 * HUGE_PAGE:  # large: starts on a huge-page boundary
        assert t.data_ptr() % HUGE_PAGE == 0
    t.view(-1)[-1] = 1  # the whole extent is writable and its own
    assert t.view(-1)[-1] == 1 and t.sum() == 1


def test_empty_huge_keeps_its_storage_alive():
    """The returned view owns the over-allocated buffer: dropping other references is safe."""
    t = empty_huge((4, HUGE_PAGE), torch.uint8)
    t.fill_(7)
    views = [t[i] for i in range(4)]
    del t
    assert all((v == 7).all() for v in views)

"""Shared fixtures: devices present, dtypes and tolerances, poisoning."""
from __future__ import annotations

import pytest
import torch

import pagedinfer  # noqa: F401  (registers the ops)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and "cuda" in pagedinfer.build_info()["backends"] else [])
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fills t with NaN (floats) or a sentinel so any element a kernel fails to write shows up."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(-123456789 if t.dtype in (torch.int32, torch.int64) else 0x5A)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    # A fresh but reproducible draw per test: the seed derives from the test's id.
    torch.manual_seed(abs(hash(request.node.nodeid)) % (2**31))

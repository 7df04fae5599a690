"""`pagedinfer bench`: microbenchmarks of every op against its PyTorch baseline and the machine's
limits. Suites register themselves with @suite in their module; list the module here."""
import importlib

from pagedinfer.bench.core import SUITES, BenchContext, Row, suite  # noqa: F401

SUITE_MODULES = ["machine", "cache", "attention", "gemm", "cuda_kernels", "layers", "e2e", "spec"]
# `pagedinfer bench all`: every op benchmark (the engine-level e2e and spec run on their own).
ALL_SUITES = ["machine", "cache", "attention", "gemm", "layers", "cuda"]


def load_suites() -> dict:
    for module in SUITE_MODULES:
        importlib.import_module(f"pagedinfer.bench.{module}")
    return SUITES

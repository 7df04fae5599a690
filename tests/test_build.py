"""The extension loads, says what it contains, and every op is registered."""
import pytest
import torch

import pagedinfer


def test_build_info():
    info = pagedinfer.build_info()
    assert "cpu" in info["backends"]
    assert info["cpu_isa_active"] in ("scalar", "avx2", "avx512")
    assert info["version"] == pagedinfer.__version__


def test_set_cpu_isa():
    try:
        pagedinfer._C.set_cpu_isa("scalar")
        assert pagedinfer._C.cpu_isa() == "scalar"
    finally:
        pagedinfer._C.set_cpu_isa("best")
    assert pagedinfer._C.cpu_isa() == pagedinfer.build_info()["cpu_isa_best"]
    with pytest.raises(ValueError, match="expected scalar, avx2, avx512 or best, got 'sse9'"):
        pagedinfer._C.set_cpu_isa("sse9")


@pytest.mark.parametrize("op", ["reshape_and_cache", "copy_blocks", "swap_blocks"])
def test_ops_registered_for_cpu(op):
    handle = getattr(torch.ops.pagedinfer, op)
    assert torch._C._dispatch_has_kernel_for_dispatch_key(handle.default.name(), "CPU")
    if "cuda" in pagedinfer.build_info()["backends"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(handle.default.name(), "CUDA")


def test_cuda_build_without_nvcc_fails_clearly(tmp_path):
    """PAGEDINFER_CUDA=1 with no nvcc stops before compiling, saying what to set."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PAGEDINFER_CUDA="1", CUDA_HOME=str(tmp_path / "no-cuda"),
               PAGEDINFER_BUILD_DIR=str(tmp_path / "build"))
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "PAGEDINFER_CUDA=1 but no nvcc was found: set CUDA_HOME" in proc.stderr + proc.stdout

"""The code every CPU runs compiles for ARM (aarch64): only the per-ISA files may use x86
intrinsics. Checked with a cross compiler when one is installed (.ci/run installs it)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch.utils.cpp_extension

ROOT = Path(__file__).resolve().parent.parent
CROSS = shutil.which("aarch64-linux-gnu-g++")


def portable_sources() -> list[str]:
    """The files of PAGEDINFER_CPU_SOURCES in CMakeLists.txt (the per-ISA lists are excluded)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"set\(PAGEDINFER_CPU_SOURCES(.*?)\)", text, re.S)
    assert block, "CMakeLists.txt has no PAGEDINFER_CPU_SOURCES list"
    return block.group(1).split()


def test_isa_files_are_not_in_the_portable_list():
    for src in portable_sources():
        assert not re.search(r"_(avx512|avx2|amx)\.cpp$", src), src


@pytest.mark.skipif(CROSS is None, reason="aarch64-linux-gnu-g++ not installed")
@pytest.mark.parametrize("source", portable_sources())
def test_compiles_for_aarch64(source):
    includes = [str(ROOT / "csrc"), sysconfig.get_paths()["include"],
                *torch.utils.cpp_extension.include_paths()]
    cmd = [CROSS, "-std=c++20", "-fsyntax-only", "-DPAGEDINFER_CPU_ISAS=\"\"",
           *[f"-I{p}" for p in includes], str(ROOT / source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

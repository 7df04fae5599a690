"""The `pagedinfer generate` command and the e2e / layers benchmark suites, on tiny settings."""
from __future__ import annotations

import pytest

from engine_common import default_model_or_skip, one_thread  # noqa: F401
from pagedinfer.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_generate_streams_text(capsys):
    default_model_or_skip()
    assert main(["generate", "The capital of France is", "--max-tokens", "6", "--threads", "1",
                 "--kv-cache-memory", "16MiB"]) == 0
    captured = capsys.readouterr()
    assert "Paris" in captured.out
    assert "6 generated tokens" in captured.err


def test_bench_layers_quick(capsys):
    assert main(["bench", "layers", "--quick", "--repeat", "3", "--warmup", "1", "--machine-json",
                 _machine_json()]) == 0
    out = capsys.readouterr().out
    assert "silu_and_mul" in out and "rotary_embedding" in out


def _machine_json() -> str:
    import json
    import tempfile

    path = tempfile.mktemp(suffix=".json")
    with open(path, "w") as f:
        json.dump({"machine": {"read_gbps": 30.0, "copy_gbps": 28.0, "fp32_gflops": 370.0,
                               "bf16_gflops": 2000.0, "cpu": "test", "device": "cpu",
                               "threads": 1}}, f)
    return path

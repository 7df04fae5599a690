"""pagedinfer: LLM inference kernels for PyTorch (paged attention, INT4/INT8 GEMM, KV cache) and a
small engine on top of them.

Importing the package loads the compiled extension, which registers torch.ops.pagedinfer.*.
"""
import torch  # noqa: F401  (libtorch must be loaded before the extension)

from pagedinfer import _C  # noqa: F401  (registers the ops)
from pagedinfer import ops  # noqa: F401

__version__ = "0.1.0"


def build_info() -> dict:
    """What this build contains (backends, CUDA archs, CPU ISAs) and what the CPU offers."""
    info = dict(_C.build_info())
    info["version"] = __version__
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info


from pagedinfer.engine import LLM, SamplingParams  # noqa: E402,F401  (the vLLM-style API)

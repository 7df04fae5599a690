"""Model definitions on pagedinfer's ops (the Llama family)."""
from pagedinfer.models.config import SUPPORTED_ARCHITECTURES, ModelConfig  # noqa: F401
from pagedinfer.models.llama import LlamaModel  # noqa: F401

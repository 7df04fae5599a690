"""The engine: Sequence (state), BlockManager (allocation), Scheduler (policy), ModelRunner
(execution), Sampler, and the LLM front end."""
from pagedinfer.engine.llm import LLM  # noqa: F401
from pagedinfer.engine.outputs import CompletionOutput, RequestOutput  # noqa: F401
from pagedinfer.engine.params import SamplingParams  # noqa: F401

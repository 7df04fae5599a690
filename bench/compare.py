#!/usr/bin/env python3
"""pagedinfer beside HF transformers and llama.cpp on the default model; see
python/pagedinfer/bench/compare.py (also `pagedinfer bench compare`). Example:

    .venv/bin/python bench/compare.py --ops-json bench/results/ops.json
"""
import sys

from pagedinfer.bench.compare import main

if __name__ == "__main__":
    sys.exit(main())

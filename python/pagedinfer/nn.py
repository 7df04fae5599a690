"""Drop-in modules for nn.Linear on the weight-only GEMM ops, and quantize_model to swap them in.

    layer = Int4Linear.from_float(nn.Linear(576, 1536), group_size=32)
    model = quantize_model(model, bits=4, group_size=32, skip=("lm_head",))

The packed weight is a submodule (`.weight`, an Int4Weight / Int8Weight), so state_dict holds
weight.qweight, weight.scale, (weight.min,) and bias; an Int4Linear(in, out, group_size) built
empty loads such a state_dict.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from pagedinfer import ops
from pagedinfer.quant import Int4Weight, Int8Weight


class _QuantLinear(nn.Module):
    _weight_cls: type = None

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 group_size: int = 32, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = self._weight_cls(out_features, in_features, group_size, device=device)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype or torch.float32),
                                     requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @property
    def group_size(self) -> int:
        return self.weight.group_size

    @classmethod
    def from_weight(cls, weight, bias: torch.Tensor | None = None):
        if not isinstance(weight, cls._weight_cls):
            raise TypeError(f"{cls.__name__}.from_weight: weight must be a {cls._weight_cls.__name__}, "
                            f"got {type(weight).__name__}")
        n, k = weight.shape
        if bias is not None and tuple(bias.shape) != (n,):
            raise ValueError(f"{cls.__name__}.from_weight: bias must have shape [{n}], got {list(bias.shape)}")
        layer = cls(k, n, bias=bias is not None, group_size=weight.group_size,
                    device=weight.qweight.device)
        layer.weight = weight
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        return layer

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 32):
        w = cls._weight_cls.quantize(linear.weight.detach(), group_size)
        return cls.from_weight(w, None if linear.bias is None else linear.bias.detach())

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.weight.dequantize(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, group_size={self.group_size}")


class Int4Linear(_QuantLinear):
    """nn.Linear with an INT4 weight (Int4Weight); forward runs pagedinfer.ops.int4_linear."""
    _weight_cls = Int4Weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.int4_linear(x, self.weight, self.bias)


class Int8Linear(_QuantLinear):
    """nn.Linear with an INT8 weight (Int8Weight); forward runs pagedinfer.ops.int8_linear."""
    _weight_cls = Int8Weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.int8_linear(x, self.weight, self.bias)


def quantize_model(model: nn.Module, bits: int = 4, group_size: int = 32,
                   skip: Iterable[str] | Callable[[str, nn.Linear], bool] = ()) -> nn.Module:
    """Replaces, in place, every nn.Linear of `model` by Int4Linear (bits=4) or Int8Linear
    (bits=8), quantized round-to-nearest. `skip`: names (a layer is skipped when its qualified
    name equals one or ends with "." + one) or a predicate (name, layer) -> bool. Layers whose
    in_features is not a multiple of group_size are left in floating point. Returns the model."""
    if bits not in (4, 8):
        raise ValueError(f"quantize_model: bits must be 4 or 8, got {bits}")
    cls = Int4Linear if bits == 4 else Int8Linear
    if callable(skip):
        skipped = skip
    else:
        names = tuple(skip)

        def skipped(name, layer):
            return any(name == s or name.endswith("." + s) for s in names)

    targets = [(name, mod) for name, mod in model.named_modules()
               if type(mod) is nn.Linear and not skipped(name, mod)
               and mod.in_features % group_size == 0]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, cls.from_float(mod, group_size))
    return model

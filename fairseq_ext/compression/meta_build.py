"""Build a model without its float weights, then give it a checkpoint's tensors themselves (no copy).

``weights_on_meta()`` builds a model whose Linear and Embedding parameters live on the meta device (no memory, and
their initialisation costs nothing); the rest of the model (LayerNorms, computed tables) is built as usual.
``assign_meta_parameters(model, state_dict)`` then makes every meta parameter the state's own tensor, so a
checkpoint is held once, not once in the state and once in the model, while a load compresses it.

Plain torch: no fairseq import.
"""

import contextlib

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["weights_on_meta", "assign_meta_parameters"]


@contextlib.contextmanager
def weights_on_meta():
    """Within: the parameters that Linear and Embedding modules register are created on the meta device, and a meta
    tensor asked to move to the CPU stays on meta (fairseq's BERT initialisation draws its numbers on the CPU:
    ``data.copy_(data.cpu().normal_())``)."""
    register = nn.Module.register_parameter

    def on_meta(module, name, parameter):
        if parameter is not None and isinstance(module, (nn.Linear, nn.Embedding)) and not parameter.is_meta:
            parameter = nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
        register(module, name, parameter)

    nn.Module.register_parameter = on_meta
    try:
        with _MetaStaysMeta():
            yield
    finally:
        nn.Module.register_parameter = register


class _MetaStaysMeta(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def assign_meta_parameters(model: nn.Module, state_dict: dict) -> None:
    """Every meta parameter of ``model`` with an entry in ``state_dict`` becomes that tensor (as float32 if it is
    another float dtype; the state's entry then becomes the same tensor, so the load that follows copies nothing).
    A parameter tied under several names stays one parameter."""
    assigned = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, parameter in list(module._parameters.items()):
            if parameter is None or not parameter.is_meta:
                continue
            key = f"{module_name}.{name}" if module_name else name
            if id(parameter) not in assigned and key in state_dict:
                tensor = state_dict[key]
                if tensor.dtype != parameter.dtype and tensor.is_floating_point():
                    tensor = tensor.to(parameter.dtype)
                assigned[id(parameter)] = nn.Parameter(tensor, requires_grad=False)
            if id(parameter) in assigned:
                module._parameters[name] = assigned[id(parameter)]
                if key in state_dict:
                    state_dict[key] = assigned[id(parameter)].data

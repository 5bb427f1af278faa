"""The memory of a model's weights as it runs, whatever holds them: float parameters, int8 and int4 modules."""

from torch import nn

from .int8 import int8_linears


def runtime_bytes(model: nn.Module) -> int:
    """Bytes of every distinct storage among the parameters and buffers of ``model`` (a tied or shared tensor
    counts once; int4 codes and int8 embedding rows are buffers), plus, per torch int8 Linear (which keeps its
    packed weight outside both), the int8 weight, one fp32 scale per output row and the bias."""
    storages = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    total = sum(storages.values())
    for module in int8_linears(model).values():
        weight, bias = module.weight(), module.bias()
        total += weight.numel() + 4 * weight.shape[0] + (0 if bias is None else bias.numel() * bias.element_size())
    return total

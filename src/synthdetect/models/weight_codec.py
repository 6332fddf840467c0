"""Weight-only int8 storage for shipped torch packages.

Shipped weights are committed to the repository, so they should stay a few MB.
Each float weight tensor of two or more dimensions is stored as int8 with
one float32 scale per output channel (symmetric, round to nearest); biases,
batch-norm statistics and small tensors stay float32.  Loading expands them
back to float32, so inference is plain float32: unlike dynamic activation
quantization (whose per-batch scales made one image's score depend on its
batch-mates), a stored model gives every image the same logit in any batch.

Written here rather than with ``torch.ao.quantization`` because that changes
the module (quantized kernels, activation observers); this only changes the
file.  The trainer measures what the rounding changes and writes it on the
card, and it scores the card's metrics with the expanded weights.
"""

from __future__ import annotations

import torch

INT8_SUFFIX = "::int8"
SCALE_SUFFIX = "::scale"
#: Tensors with fewer elements are kept as float32: they save nothing worth the rounding.
MIN_ELEMENTS = 256


def _packable(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.ndim >= 2 and tensor.numel() >= MIN_ELEMENTS


def pack_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with its large weight tensors as int8 plus per-output-channel scales."""
    packed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not _packable(tensor):
            packed[key] = tensor
            continue
        flat = tensor.detach().float().reshape(tensor.shape[0], -1)
        scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        packed[key + INT8_SUFFIX] = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(
            tensor.shape).contiguous()
        packed[key + SCALE_SUFFIX] = scale
    return packed


def unpack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 state dict from a packed one; a state dict with nothing packed comes back unchanged."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if key.endswith(INT8_SUFFIX):
            name = key[: -len(INT8_SUFFIX)]
            scale = state.get(name + SCALE_SUFFIX)
            if scale is None:
                raise ValueError(f"packed weights: {name} has int8 values but no scales")
            shape = (-1,) + (1,) * (tensor.ndim - 1)
            out[name] = tensor.float() * scale.float().reshape(shape)
        else:
            out[key] = tensor
    return out


def round_trip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 weights a model gets after being stored with :func:`pack_int8` and loaded."""
    return unpack(pack_int8(state))

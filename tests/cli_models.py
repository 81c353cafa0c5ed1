"""Tiny MODEL callables for the CLI tests (``tests.cli_models:tiny`` or ``tests/cli_models.py``).

The CLI resolves MODEL to these callables by module path or by file path; the models
themselves are defined in :mod:`tests.models.cli`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tests.models.cli import TinyNet, ValueBranch

EXAMPLE_SHAPE = (1, 3, 8, 8)


def tiny() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """A model and its example inputs."""
    torch.manual_seed(0)
    return TinyNet().eval(), (torch.randn(EXAMPLE_SHAPE),)


def get_model() -> nn.Module:
    """The conventional name a bare ``file.py`` MODEL resolves to; no example inputs."""
    torch.manual_seed(0)
    return TinyNet().eval()


def unexportable() -> tuple[nn.Module, tuple[Tensor, ...]]:
    return ValueBranch(), (torch.randn(2, 4),)


def not_a_model() -> int:
    return 42

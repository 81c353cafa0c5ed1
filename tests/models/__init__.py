"""The test model zoo, defined once and shared by tests, benchmarks and examples.

* :mod:`tests.models.seed_models`: tiny exact architectures whose node counts tests assert.
* :mod:`tests.models.zoo`: scaled-down real architectures (ResNet, MobileNet, EfficientNet,
  transformer, LSTM, ...) and the :data:`ZOO` registry.
* :mod:`tests.models.zoo_decoder`: a Llama-style decoder (RMSNorm, rotary, grouped-query SDPA
  attention, SwiGLU, tied lm_head) for the LLM quantization schemes.
* :mod:`tests.models.control_flow`: models with no_grad / cond / scan / while_loop bodies.
* :mod:`tests.models.xnnpack_patterns`, :mod:`tests.models.x86_patterns`: one model per rule
  of each backend; :mod:`tests.models.edge_cases`, :mod:`tests.models.reentrant`,
  :mod:`tests.models.cli`: the models the pipeline's edge-case, re-entrant-quantization and
  command-line tests share (import those from their module).

Every model has ``example_inputs()`` returning a tuple of small tensors. Import from the
package, e.g. ``from tests.models import ZOO, ConvWithBNRelu, export_model``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx import GraphModule

from tests.models.control_flow import *  # noqa: F403
from tests.models.control_flow import __all__ as _control_flow_all
from tests.models.seed_models import *  # noqa: F403
from tests.models.seed_models import __all__ as _seed_all
from tests.models.zoo import *  # noqa: F403
from tests.models.zoo import __all__ as _zoo_all

__all__ = [*_seed_all, *_zoo_all, *_control_flow_all, "export_model"]


def export_model(
    model: nn.Module, example_inputs: tuple[Tensor, ...] | None = None, strict: bool = False
) -> GraphModule:
    """Export ``model`` in eval mode the way the PT2E flow expects (``.module()`` of the
    program), defaulting the inputs to ``model.example_inputs()``.

    Eval mode matters: batch norm exports as its inference form and dropout as a no-op.
    """
    inputs = model.example_inputs() if example_inputs is None else example_inputs
    return torch.export.export(model.eval(), inputs, strict=strict).module()

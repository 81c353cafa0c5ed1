"""ScopedConfigs.config_for on exported models with nested submodules.

Precedence: module name > module type > operator type > global; the innermost enclosing
module name wins over an outer one; ``None`` anywhere means float; filter_fn gates it all.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant import AnnotationError, QuantizationSpec, convert_pt2e, prepare_pt2e
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.observer import MinMaxObserver
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.inherit_body_module_stacks import inherit_body_module_stacks
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.config import QuantizationConfig
from quantizers.scoping import ScopedConfigs, module_path_and_types
from tests.graph_check import count_ops
from tests.models import CondLinear, export_model

aten = torch.ops.aten


def _config(quant_max: int) -> QuantizationConfig:
    """A config told apart from the others by its activation's quant_max."""
    spec = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=quant_max,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=MinMaxObserver,
    )
    return QuantizationConfig(spec, spec, None, None)


GLOBAL, OPERATOR, TYPE, NAME, INNER_NAME = (_config(q) for q in (127, 126, 125, 124, 123))


class Inner(nn.Module):
    """``x ─ linear ─ relu``"""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class Block(nn.Module):
    """``x ─ inner(Inner) ─ proj(Linear) ─ add(x)``"""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.inner(x)) + x


class Outer(nn.Module):
    """Nested scopes; node names in the export are listed next to each call::

    x ─ block1(Block)        linear, relu, linear_1, add
      ─ layers.0(Block)      linear_2, relu_1, linear_3, add_1
      ─ head(Linear)         linear_4
      ─ mul(2)               mul (the root module only)
    """

    def __init__(self) -> None:
        super().__init__()
        self.block1 = Block()
        self.layers = nn.ModuleList([Block()])
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x) * 2


@pytest.fixture(scope="module")
def graph() -> GraphModule:
    return export_model(Outer(), (torch.randn(2, 4),))


def _nodes(gm: GraphModule) -> dict[str, Node]:
    return {n.name: n for n in gm.graph.nodes if n.op == "call_function"}


def _configs(scopes: ScopedConfigs, gm: GraphModule) -> dict[str, QuantizationConfig | None]:
    return {name: scopes.config_for(node) for name, node in _nodes(gm).items()}


def test_model_exports_the_names_this_file_relies_on(graph: GraphModule) -> None:
    names = _nodes(graph)
    assert set(names) == {
        *("linear", "relu", "linear_1", "add"),
        *("linear_2", "relu_1", "linear_3", "add_1"),
        *("linear_4", "mul"),
    }
    paths = [path for path, _ in module_path_and_types(names["linear_2"])]
    assert paths == ["", "layers.0", "layers.0.inner", "layers.0.inner.linear"]


def test_global_applies_to_every_op(graph: GraphModule) -> None:
    configs = _configs(ScopedConfigs(global_config=GLOBAL), graph)
    assert set(configs.values()) == {GLOBAL}


def test_nothing_set_means_float(graph: GraphModule) -> None:
    assert set(_configs(ScopedConfigs(), graph).values()) == {None}


def test_operator_type_beats_global(graph: GraphModule) -> None:
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.set_operator_type(aten.linear, OPERATOR)
    configs = _configs(scopes, graph)
    assert configs["linear_4"] is OPERATOR and configs["linear"] is OPERATOR
    assert configs["relu"] is GLOBAL and configs["mul"] is GLOBAL


def test_operator_type_given_an_overload_matches_the_packet(graph: GraphModule) -> None:
    scopes = ScopedConfigs()
    scopes.set_operator_type(aten.linear.default, OPERATOR)
    assert list(scopes.operator_type) == [aten.linear]
    configs = _configs(scopes, graph)
    assert {name for name, config in configs.items() if config is OPERATOR} == {
        "linear",
        "linear_1",
        "linear_2",
        "linear_3",
        "linear_4",
    }


def test_module_type_beats_operator_type(graph: GraphModule) -> None:
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.set_operator_type(aten.linear, OPERATOR)
    scopes.module_type[Inner] = TYPE
    configs = _configs(scopes, graph)
    assert configs["linear"] is TYPE and configs["relu"] is TYPE  # both Inner instances
    assert configs["linear_2"] is TYPE and configs["relu_1"] is TYPE
    assert configs["linear_1"] is OPERATOR  # Block.proj is not inside an Inner
    assert configs["add"] is GLOBAL


def test_builtin_module_type(graph: GraphModule) -> None:
    scopes = ScopedConfigs()
    scopes.module_type[nn.Linear] = TYPE
    configs = _configs(scopes, graph)
    assert {name for name, config in configs.items() if config is TYPE} == {
        "linear",
        "linear_1",
        "linear_2",
        "linear_3",
        "linear_4",
    }


def test_module_type_matches_the_class_not_its_short_name(graph: GraphModule) -> None:
    class Inner(nn.Module):  # same __name__ as the model's Inner, different class
        pass

    scopes = ScopedConfigs()
    scopes.module_type[Inner] = TYPE
    assert set(_configs(scopes, graph).values()) == {None}


def test_module_name_beats_module_type(graph: GraphModule) -> None:
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.module_type[Inner] = TYPE
    scopes.module_name["block1.inner"] = NAME
    configs = _configs(scopes, graph)
    assert configs["linear"] is NAME and configs["relu"] is NAME
    assert configs["linear_2"] is TYPE  # layers.0.inner: only the type matches


def test_outer_module_name_beats_inner_module_type(graph: GraphModule) -> None:
    """Scope kinds rank before nesting depth: a name on block1 covers its Inner too."""
    scopes = ScopedConfigs()
    scopes.module_type[Inner] = TYPE
    scopes.module_name["block1"] = NAME
    configs = _configs(scopes, graph)
    assert configs["linear"] is NAME and configs["add"] is NAME
    assert configs["linear_2"] is TYPE


def test_innermost_module_name_wins(graph: GraphModule) -> None:
    scopes = ScopedConfigs()
    scopes.module_name["block1"] = NAME
    scopes.module_name["block1.inner"] = INNER_NAME
    configs = _configs(scopes, graph)
    assert configs["linear"] is INNER_NAME and configs["relu"] is INNER_NAME
    assert configs["linear_1"] is NAME and configs["add"] is NAME
    assert configs["linear_2"] is None


def test_module_list_item_and_leaf_module_names(graph: GraphModule) -> None:
    scopes = ScopedConfigs()
    scopes.module_name["layers.0"] = NAME
    scopes.module_name["head"] = INNER_NAME
    configs = _configs(scopes, graph)
    assert {name for name, c in configs.items() if c is NAME} == {
        "linear_2",
        "relu_1",
        "linear_3",
        "add_1",
    }
    assert configs["linear_4"] is INNER_NAME and configs["mul"] is None


def test_root_module_name_covers_everything(graph: GraphModule) -> None:
    scopes = ScopedConfigs()
    scopes.module_name[""] = NAME
    assert set(_configs(scopes, graph).values()) == {NAME}


def test_none_module_name_excludes_despite_broader_scopes(graph: GraphModule) -> None:
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.set_operator_type(aten.linear, OPERATOR)
    scopes.module_type[Inner] = TYPE
    scopes.module_name["block1"] = None
    configs = _configs(scopes, graph)
    assert all(configs[n] is None for n in ("linear", "relu", "linear_1", "add"))
    assert configs["linear_2"] is TYPE and configs["linear_3"] is OPERATOR
    assert configs["mul"] is GLOBAL


def test_none_inner_name_excludes_inside_configured_outer_name(graph: GraphModule) -> None:
    scopes = ScopedConfigs()
    scopes.module_name["block1"] = NAME
    scopes.module_name["block1.inner"] = None
    configs = _configs(scopes, graph)
    assert configs["linear"] is None and configs["relu"] is None
    assert configs["linear_1"] is NAME


def test_none_module_type_excludes_despite_operator_type(graph: GraphModule) -> None:
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.set_operator_type(aten.linear, OPERATOR)
    scopes.module_type[Inner] = None
    configs = _configs(scopes, graph)
    assert configs["linear"] is None and configs["linear_2"] is None
    assert configs["linear_1"] is OPERATOR and configs["add"] is GLOBAL


def test_none_operator_type_excludes_despite_global(graph: GraphModule) -> None:
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.set_operator_type(aten.relu, None)
    configs = _configs(scopes, graph)
    assert configs["relu"] is None and configs["relu_1"] is None
    assert configs["linear"] is GLOBAL


def test_filter_fn_gates_every_scope(graph: GraphModule) -> None:
    scopes = ScopedConfigs(global_config=GLOBAL, filter_fn=lambda node: node.name != "linear")
    scopes.set_operator_type(aten.linear, OPERATOR)
    scopes.module_type[Inner] = TYPE
    scopes.module_name["block1.inner.linear"] = NAME
    configs = _configs(scopes, graph)
    assert configs["linear"] is None  # rejected by the filter despite four scopes
    assert configs["relu"] is TYPE and configs["linear_1"] is OPERATOR
    assert configs["mul"] is GLOBAL


def test_filter_fn_is_called_with_the_node(graph: GraphModule) -> None:
    seen: list[Node] = []
    scopes = ScopedConfigs(global_config=GLOBAL, filter_fn=lambda n: seen.append(n) or True)
    node = _nodes(graph)["relu"]
    assert scopes.config_for(node) is GLOBAL
    assert seen == [node]


def test_missing_module_stack_with_module_scoping_raises_naming_the_node() -> None:
    gm = export_model(Outer(), (torch.randn(2, 4),))
    relu = _nodes(gm)["relu"]
    del relu.meta["nn_module_stack"]
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.set_operator_type(aten.relu, OPERATOR)
    assert scopes.config_for(relu) is OPERATOR  # no module scopes: metadata not needed
    scopes.module_type[Inner] = TYPE
    with pytest.raises(AnnotationError, match=r"'relu' \(call_function aten.relu.default\)"):
        scopes.config_for(relu)
    scopes = ScopedConfigs(module_name={"block1": NAME})
    with pytest.raises(AnnotationError, match="has no nn_module_stack metadata"):
        scopes.config_for(relu)


def test_missing_module_stack_advice_names_the_quantizers_own_setter() -> None:
    """An X86 user is pointed at set_function_type_qconfig, the setter X86 has."""
    gm = export_model(Outer(), (torch.randn(2, 4),))
    relu = _nodes(gm)["relu"]
    del relu.meta["nn_module_stack"]
    for setter_names, advice in (
        ({}, "set_operator_type / set_global"),
        ({"set_operator_type": "set_function_type_qconfig"}, "set_function_type_qconfig / "),
    ):
        scopes = ScopedConfigs(module_name={"block1": NAME}, setter_names=setter_names)
        with pytest.raises(AnnotationError, match=advice):
            scopes.config_for(relu)


def test_non_call_nodes_without_module_stack_fall_through(graph: GraphModule) -> None:
    weight = next(n for n in graph.graph.nodes if n.op == "get_attr")
    assert "nn_module_stack" not in weight.meta
    scopes = ScopedConfigs(global_config=GLOBAL, module_name={"block1": NAME})
    assert scopes.config_for(weight) is GLOBAL


def test_control_flow_body_nodes_inherit_the_module_stack_of_their_call() -> None:
    # torch.export leaves nn_module_stack empty inside cond / scan / while_loop bodies; prepare
    # fills it from the higher-order call so module scoping neither raises nor misses them.

    gm = export_model(CondLinear())
    bodies = list(iter_graph_modules(gm))[1:]
    body_calls = [n for b in bodies for n in b.graph.nodes if n.op == "call_function"]
    assert body_calls and not any(n.meta.get("nn_module_stack") for n in body_calls)
    scopes = ScopedConfigs(global_config=GLOBAL, module_name={"unrelated": None})
    with pytest.raises(AnnotationError, match="nn_module_stack"):
        scopes.config_for(body_calls[0])

    inherit_body_module_stacks(gm)
    assert all(scopes.config_for(node) is GLOBAL for node in body_calls)
    by_type = ScopedConfigs(global_config=GLOBAL, module_type={CondLinear: NAME})
    assert all(by_type.config_for(node) is NAME for node in body_calls)


def test_prepare_scopes_control_flow_bodies_by_enclosing_module() -> None:

    model = CondLinear()
    gm = export_model(model)
    config = get_symmetric_quantization_config()
    quantizer = XNNPACKQuantizer().set_module_type(CondLinear, config)
    prepared = prepare_pt2e(gm, quantizer)
    prepared(*model.example_inputs())
    converted = convert_pt2e(prepared)
    dq = qdq_ops.DEQUANTIZE_PER_TENSOR

    body_dq = sum(count_ops(b).get(dq, 0) for b in list(iter_graph_modules(converted))[1:])
    assert body_dq > 0


def test_all_configs_lists_distinct_non_none_configs_in_scope_order() -> None:
    scopes = ScopedConfigs(global_config=GLOBAL)
    scopes.set_operator_type(aten.linear, OPERATOR)
    scopes.set_operator_type(aten.relu, None)
    scopes.module_type[Inner] = TYPE
    scopes.module_type[Block] = GLOBAL  # duplicate of the global config
    scopes.module_name["block1"] = NAME
    scopes.module_name["head"] = None
    assert scopes.all_configs() == [GLOBAL, OPERATOR, TYPE, NAME]
    assert ScopedConfigs().all_configs() == []
    assert ScopedConfigs(module_name={"a": _config(127)}).all_configs() == [GLOBAL]


def test_configs_by_setter_names_the_call_that_set_each_config() -> None:
    """Messages about a config (X86's mixed-mode warning) name the user's setter call, in the
    quantizer's own spelling; None scopes are no config and are left out."""
    scopes = ScopedConfigs(global_config=GLOBAL, setter_names={"set_module_name": "by_name"})
    scopes.set_operator_type(aten.linear.default, OPERATOR)
    scopes.set_operator_type(aten.relu, None)
    scopes.module_type[Inner] = TYPE
    scopes.module_name["block1"] = NAME
    assert scopes.configs_by_setter() == [
        ("set_global", GLOBAL),
        ("set_operator_type(aten.linear)", OPERATOR),
        ("set_module_type(Inner)", TYPE),
        ("by_name('block1')", NAME),
    ]
    assert ScopedConfigs().configs_by_setter() == []

import json
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from evonorm_search import GraphError, LayerGraph, Node, baselines
from evonorm_search.graph import NUM_INITIAL, ShapeClass, as_graph
from evonorm_search.layer import evaluate_graph

from strategies import add_dead_nodes, graphs, layers, reorder, swap_commutative

S0_JSON = {
    "format": "evonorm-graph/1",
    "nodes": [
        {"op": "std", "axis": "group", "inputs": [0]},
        {"op": "mul", "inputs": [3, 0]},
        {"op": "sigmoid", "inputs": [5]},
        {"op": "mul", "inputs": [0, 6]},
        {"op": "div", "inputs": [7, 4]},
    ],
}


def test_design_example_is_evonorm_s0():
    g = LayerGraph.from_json(S0_JSON)
    assert g.formula() == "x * sigmoid(v1 * x) / std_group(x)"
    assert g.structural_hash() == baselines.get("evonorm_s0").structural_hash()


# ---------------------------------------------------------------- round trips


@given(graphs())
def test_json_round_trip(g):
    assert LayerGraph.from_json(g.to_json()) == g
    assert LayerGraph.from_json(json.loads(g.to_json())) == g
    assert LayerGraph.from_json(g.to_json(indent=2).encode()) == g


@given(graphs())
def test_formula_round_trip(g):
    parsed = LayerGraph.parse(g.formula())
    assert parsed.canonical() == g.canonical()
    assert parsed.formula() == g.formula()


@given(graphs())
def test_canonical_formula_is_a_fixed_point(g):
    c = g.canonical()
    assert LayerGraph.parse(c.formula()) == c


@pytest.mark.parametrize(
    ("formula", "printed"),
    [
        ("x - v1", "x - v1"),
        ("x - (v1 - v0)", "x - (v1 - v0)"),
        ("(x - v1) - v0", "x - v1 - v0"),
        ("x + (v1 + v0)", "x + (v1 + v0)"),
        ("x / (v1 * v0)", "x / (v1 * v0)"),
        ("x * (v1 / v0)", "x * (v1 / v0)"),
        ("x * v1 / v0", "x * v1 / v0"),
        ("-(x * v1)", "-(x * v1)"),
        ("-x * v1", "-x * v1"),
        ("-(-x)", "-(-x)"),
        ("x - -v1", "x - -v1"),
        ("(x + v1) * v0", "(x + v1) * v0"),
        ("x - 0", "x - 0"),
        ("+x * 0.0", "x * 0"),
        ("max(x, -0)", "max(x, -0)"),
        ("std_group(x + v1)", "std_group(x + v1)"),
    ],
)
def test_printer_parenthesises_exactly_where_needed(formula, printed):
    g = LayerGraph.parse(formula)
    assert g.formula() == printed
    assert LayerGraph.parse(printed) == g


def test_subtraction_is_add_of_neg():
    g = LayerGraph.parse("x - v1")
    assert g.nodes == (Node("neg", (3,)), Node("add", (0, 4)))


def test_parse_merges_repeated_subexpressions():
    g = LayerGraph.parse("sigmoid(x * v1) * x + sigmoid(x * v1) * x")
    assert len(g) == 4  # mul, sigmoid, mul, add
    assert g.nodes[-1] == Node("add", (6, 6))


# ---------------------------------------------------------------- canonical form


@given(graphs(), st.randoms(use_true_random=False))
def test_canonical_is_idempotent_and_invariant(g, rng):
    c = g.canonical()
    assert c.canonical() == c
    assert swap_commutative(g, rng).canonical() == c
    assert reorder(g, rng).canonical() == c
    assert add_dead_nodes(g, rng, rng.randint(1, 4)).canonical() == c
    assert swap_commutative(reorder(g, rng), rng).structural_hash() == g.structural_hash()


@given(layers(), st.randoms(use_true_random=False))
def test_canonical_computes_the_same_function(g, rng):
    torch.manual_seed(rng.randrange(2**31))
    x = torch.randn(3, 4, 5, 2, dtype=torch.float64) * 2 + 0.5
    v0, v1 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)

    def run(graph):
        return evaluate_graph(graph, x, v0, v1, groups=2, eps=1e-5)[-1].expand(x.shape)

    torch.testing.assert_close(run(g.canonical()), run(g), equal_nan=True, rtol=1e-12, atol=1e-12)


@given(graphs(max_nodes=3), graphs(max_nodes=3))
def test_structural_hashes_are_equal_exactly_for_equal_canonical_forms(a, b):
    # Small graphs, so that equal canonical forms are common enough to test both ways.
    assert (a.structural_hash() == b.structural_hash()) == (a.canonical() == b.canonical())


def test_canonical_merges_identical_nodes_and_prunes():
    g = LayerGraph.from_json(
        {
            "format": "evonorm-graph/1",
            "nodes": [
                {"op": "sigmoid", "inputs": [0]},
                {"op": "exp", "inputs": [2]},  # dead
                {"op": "sigmoid", "inputs": [0]},  # same as node 4
                {"op": "mul", "inputs": [6, 4]},
            ],
        }
    )
    assert g.live == frozenset({0, 4, 6, 7})
    assert len(g.pruned()) == 3
    assert g.canonical().nodes == (Node("sigmoid", (0,)), Node("mul", (4, 4)))


def test_structural_hash_distinguishes_structure():
    hashes = {
        LayerGraph.parse(f).structural_hash()
        for f in [
            "x * v1",
            "x * v0",
            "x / v1",
            "v1 / x",
            "x - v1",
            "v1 - x",
            "x / std_group(x)",
            "x / std_instance(x)",
            "x / rms_group(x)",
            "x / std_group(v1 * x)",
        ]
    }
    assert len(hashes) == 10
    assert (
        LayerGraph.parse("v1 * x").structural_hash() == LayerGraph.parse("x * v1").structural_hash()
    )
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in hashes)


# ---------------------------------------------------------------- shape classes


@given(graphs(), st.sampled_from([(), (7,), (4, 5)]))
def test_shape_classes_agree_with_eager_shapes(g, spatial):
    n, c, groups = 3, 6, 2
    x = torch.randn(n, c, *spatial, dtype=torch.float64)
    values = evaluate_graph(
        g,
        x,
        torch.randn(c, dtype=torch.float64),
        torch.randn(c, dtype=torch.float64),
        groups=groups,
        eps=1e-5,
    )
    for index, (value, cls) in enumerate(zip(values, g.shape_classes, strict=True)):
        shape = (1,) * (x.dim() - value.dim()) + tuple(value.shape)
        assert (shape[0] == n) == cls.batch, (index, shape, cls)
        assert (shape[1] == c) == (cls.channel != "none"), (index, shape, cls)
        if spatial:  # a dense (N, C) tensor has no spatial axes to vary along
            assert (shape[2:] == spatial) == cls.spatial, (index, shape, cls)
        if cls.channel == "group":  # constant over the channels of each group
            full = value.expand(shape).reshape(shape[0], groups, c // groups, *shape[2:])
            torch.testing.assert_close(full, full[:, :, :1].expand_as(full), equal_nan=True)


def test_shape_class_join_and_text():
    group = ShapeClass(True, "group", False)
    assert str(group.join(ShapeClass(False, "none", True))) == "(N, G, S)"
    assert group.join(ShapeClass(False, "full", False)).channel == "full"
    g = LayerGraph.parse("mean_channel(x) * v1 + mean_batch(x)")
    assert [str(c) for c in g.shape_classes[NUM_INITIAL:]] == [
        "(N, -, S)",
        "(N, C, S)",
        "(-, C, -)",
        "(N, C, S)",
    ]


# ---------------------------------------------------------------- validation


def with_nodes(nodes: str) -> str:
    return '{"format": "evonorm-graph/1", "nodes": ' + nodes + "}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not json", "not valid JSON"),
        (with_nodes("["), "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"format": "evonorm-graph/2", "nodes": []}', "format must be"),
        ('{"nodes": []}', "format must be"),
        ('{"format": "evonorm-graph/1"}', "needs 'nodes'"),
        (with_nodes("{}"), "needs 'nodes'"),
        ('{"format": "evonorm-graph/1", "nodes": [], "x": 1}', "unknown keys ['x']"),
        (with_nodes("[]"), "at least one node"),
        (with_nodes("[7]"), "node 4: must be an object"),
        (with_nodes('[{"op": "exp"}]'), "node 4 (exp): 'inputs'"),
        (with_nodes('[{"op": 3, "inputs": [0]}]'), "'op' must be"),
        (with_nodes('[{"op": "cos", "inputs": [0]}]'), "node 4: unknown op 'cos'"),
        (with_nodes('[{"op": "add", "inputs": [0]}]'), "node 4 (add): expects 2 inputs, got 1"),
        (with_nodes('[{"op": "exp", "inputs": [4]}]'), "input 4 must be an index of an earlier"),
        (with_nodes('[{"op": "exp", "inputs": [-1]}]'), "input -1 must be"),
        (with_nodes('[{"op": "exp", "inputs": [1.0]}]'), "input 1.0 must be"),
        (with_nodes('[{"op": "exp", "inputs": [true]}]'), "input True must be"),
        (with_nodes('[{"op": "std", "inputs": [0]}]'), "statistic needs an axis"),
        (with_nodes('[{"op": "std", "axis": "time", "inputs": [0]}]'), "got 'time'"),
        (with_nodes('[{"op": "std", "axis": 1, "inputs": [0]}]'), "'axis' must be a string"),
        (with_nodes('[{"op": "exp", "axis": "batch", "inputs": [0]}]'), "takes no axis"),
        (with_nodes('[{"op": "exp", "input": [0]}]'), "unknown keys ['input']"),
    ],
)
def test_malformed_json_raises_graph_error(data, message):
    with pytest.raises(GraphError) as info:
        LayerGraph.from_json(data)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("", "formula is empty"),
        ("x +", "not valid syntax"),
        ("x ** 2", "operator Pow after column 1"),
        ("sqrt(x) ** 2", "operator Pow after column 7"),
        ("x % v1", "operator Mod"),
        ("y", "unknown name 'y'"),
        ("2 * x", "the only constant is 0"),
        ("True * x", "the only constant is 0"),
        ("'a'", "the only constant is 0"),
        ("foo(x)", "unknown function 'foo'"),
        ("std_time(x)", "unknown axis 'time'"),
        ("mean(x)", "unknown function 'mean'"),
        ("exp_batch(x)", "unknown function 'exp_batch'"),
        ("max(x)", "takes 2 arguments, got 1"),
        ("sigmoid(x, v1)", "takes 1 argument, got 2"),
        ("sigmoid(x=x)", "positional arguments only"),
        ("sigmoid(*x)", "positional arguments only"),
        ("x.real", "unsupported syntax Attribute"),
        ("torch.exp(x)", "only plain function names"),
        ("[x][0]", "unsupported syntax Subscript"),
        ("lambda: x", "unsupported syntax Lambda"),
        ("__import__('os').system('true')", "only plain function names"),
        ("x if v1 else v0", "unsupported syntax IfExp"),
        ("~x", "unsupported syntax UnaryOp"),
        ("x", "has no op"),
        ("-" * 5000 + "x", "nests too deeply"),
        ("+".join(["x"] * 100_000), "nests too deeply"),
        ("x\0", "formula"),
    ],
)
def test_bad_formula_raises_graph_error(formula, message):
    with pytest.raises(GraphError) as info:
        LayerGraph.parse(formula)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("mean_batch(x)", "shape class (-, C, -)"),
        ("v1 + v0", "shape class (-, C, -)"),
        ("mean_layer(x)", "shape class (N, -, -)"),
        ("mean_channel(x)", "shape class (N, -, S)"),
        ("std_group(x) * v1", "shape class (N, C, -)"),
        ("max(x, 0) - x + 0", None),
    ],
)
def test_validate_layer(formula, message):
    g = LayerGraph.parse(formula)
    if message is None:
        assert g.validate() is g
    else:
        with pytest.raises(GraphError, match=message.replace("(", r"\(").replace(")", r"\)")):
            g.validate()


def test_output_independent_of_x_is_invalid():
    # A statistic's class does not depend on its input, so this output has x's class
    # without reading x; a dead read of x does not count either.
    g = LayerGraph.parse("mean_channel(v1) * v1")
    assert str(g.shape_classes[g.output]) == "(N, C, S)"
    assert not g.depends_on_x
    with pytest.raises(GraphError, match="does not depend on x"):
        g.validate()
    dead_read = LayerGraph((Node("exp", (0,)), Node("mean", (3,), "channel"), Node("mul", (5, 3))))
    assert dead_read.live == frozenset({3, 5, 6})
    with pytest.raises(GraphError, match="does not depend on x"):
        dead_read.validate()


def test_parse_refuses_non_strings():
    with pytest.raises(GraphError, match="a formula must be a string, got int"):
        LayerGraph.parse(123)


def test_long_input_is_not_echoed_whole():
    with pytest.raises(GraphError) as info:
        LayerGraph.parse("+" * 10_000 + "x")
    assert len(str(info.value)) < 200


def test_constructor_checks_structure():
    with pytest.raises(GraphError, match="at least one node"):
        LayerGraph(())
    with pytest.raises(GraphError, match="node 5"):
        LayerGraph([Node("exp", (0,)), Node("add", (0, 5))])
    import numpy as np

    g = LayerGraph((Node("exp", (np.int64(0),)),))
    assert g.nodes[0].inputs == (0,) and type(g.nodes[0].inputs[0]) is int


def test_as_graph_accepts_every_form():
    g = baselines.get("evonorm_s0")
    assert as_graph(g) is g
    assert as_graph(g.to_json()) == g
    assert as_graph(g.to_dict()) == g
    assert as_graph(g.formula()) == g
    with pytest.raises(GraphError, match="expected a LayerGraph"):
        as_graph(42)


def test_formula_refuses_exponential_expansion():
    nodes = [Node("add", (0, 0))] + [
        Node("add", (NUM_INITIAL + k, NUM_INITIAL + k)) for k in range(40)
    ]
    g = LayerGraph(tuple(nodes))
    with pytest.raises(GraphError, match="use the JSON form"):
        g.formula()
    assert "41 nodes" in repr(g)
    assert len(g.canonical()) == 41  # canonical form and hashing stay linear
    assert len(g.structural_hash()) == 32


def test_large_graph_without_size_limit():
    nodes = [Node("sigmoid", (0,))] + [Node("add", (NUM_INITIAL + k, 0)) for k in range(3000)]
    g = LayerGraph(tuple(nodes))
    c = g.canonical()
    assert len(c) == 3001
    assert LayerGraph.from_json(c.to_json()) == c


# ---------------------------------------------------------------- networkx


def test_to_networkx():
    import networkx as nx

    g = LayerGraph.parse("x * sigmoid(v1 * x) / std_group(x)")
    nxg = g.to_networkx()
    assert nx.is_directed_acyclic_graph(nxg)
    assert nxg.graph["output"] == g.output
    assert nxg.nodes[g.output]["label"] == "div"
    std = next(i for i, d in nxg.nodes(data=True) if d["op"] == "std")
    assert nxg.nodes[std]["axis"] == "group"
    assert nxg.nodes[std]["shape_class"] == "(N, G, -)"
    assert not nxg.nodes[2]["live"]  # v0 unused
    assert set(nx.ancestors(nxg, g.output)) == {i for i in g.live if i != g.output}
    # add(x, x) keeps both edges, told apart by argument position.
    double = LayerGraph.parse("x + x").to_networkx()
    assert sorted(d["arg"] for _, _, d in double.in_edges(4, data=True)) == [0, 1]


def test_graphs_are_hashable_values():
    a, b = LayerGraph.parse("x * v1"), LayerGraph.parse("x * v1")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert LayerGraph.parse("v1 * x") != a  # genomes differ; canonical forms agree
    assert repr(a) == "LayerGraph.parse('x * v1')"
    g = LayerGraph.parse("sigmoid(x) * tanh(v1) + exp(v0)")  # three independent chains
    orders = {reorder(g, random.Random(seed)) for seed in range(20)}
    assert len(orders) > 1 and len({o.canonical() for o in orders}) == 1

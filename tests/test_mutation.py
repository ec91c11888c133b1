import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evonorm_search import GraphError, LayerGraph, baselines
from evonorm_search.mutation import MUTATIONS, mutate, random_graph
from evonorm_search.space import load_space

SPACES = ["evonorm_b", "evonorm_s", "sequence"]


def narrow_space(tmp_path: Path, mutation: str = "", graph: str = ""):
    path = tmp_path / "narrow.toml"
    path.write_text(
        "[graph]\nmax_nodes = 4\nops = ['add', 'mul', 'max', 'sigmoid']\n"
        f"statistics = ['std']\naxes = ['instance']\n{graph}\n[mutation]\n{mutation}\n"
    )
    return load_space(path)


def assert_valid_in(space, graph: LayerGraph) -> None:
    assert space.violations(graph) == []
    assert graph.layer_problem() is None


@pytest.mark.parametrize("name", SPACES)
def test_random_graphs_are_valid_layers_of_their_space(name):
    space = load_space(name)
    rng = np.random.default_rng(0)
    graphs = [random_graph(space, rng) for _ in range(200)]
    for g in graphs:
        assert_valid_in(space, g)
    assert {len(g) for g in graphs} == set(range(1, space.graph.max_nodes + 1))
    # Varied, though small live parts recur (uniform inputs leave ~2.6 live nodes on average).
    assert len({g.structural_hash() for g in graphs}) > 100


def test_same_seed_same_graphs():
    space = load_space("evonorm_b")
    a = [random_graph(space, np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert random_graph(space, np.random.default_rng(8)) != a[0]


@pytest.mark.parametrize("name", SPACES)
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=3, deadline=None)
def test_mutation_chains_of_1000_steps_stay_valid(name, seed):
    space = load_space(name)
    rng = np.random.default_rng(seed)
    graph = random_graph(space, rng)
    kinds = set()
    for _ in range(1000):
        child, description = mutate(graph, space, rng)
        assert child.structural_hash() != graph.structural_hash()  # never a dead-only change
        assert_valid_in(space, child)
        kinds.add(description.split()[0])
        graph = child
    assert kinds == set(MUTATIONS)


def test_children_never_use_excluded_ops_even_in_dead_nodes(tmp_path):
    space = narrow_space(tmp_path)
    rng = np.random.default_rng(1)
    graph = random_graph(space, rng)
    for _ in range(2000):
        graph, _ = mutate(graph, space, rng)
        assert {n.op for n in graph.nodes} <= {"add", "mul", "max", "sigmoid", "std"}
        assert {n.axis for n in graph.nodes} <= {None, "instance"}
        assert len(graph) <= 4


@pytest.mark.parametrize("kind", list(MUTATIONS))
def test_each_operator_does_what_it_says(tmp_path, kind):
    weights = "\n".join(f"{k} = {1.0 if k == kind else 0.0}" for k in MUTATIONS)
    space = narrow_space(tmp_path, weights, graph="")
    rng = np.random.default_rng(3)
    # Three nodes: room to insert one (the space allows four) and to delete one.
    parent = LayerGraph.parse("sigmoid(x) * x + v1")
    for _ in range(50):
        child, description = mutate(parent, space, rng)
        assert description.startswith(kind)
        changed = [
            i for i, (a, b) in enumerate(zip(parent.nodes, child.nodes, strict=False)) if a != b
        ]
        if kind == "change_op":
            assert len(child) == len(parent) and len(changed) == 1
            old, new = parent.nodes[changed[0]], child.nodes[changed[0]]
            assert old.inputs == new.inputs and (old.op, old.axis) != (new.op, new.axis)
        elif kind == "rewire":
            (i,) = changed
            old, new = parent.nodes[i], child.nodes[i]
            assert (old.op, old.axis) == (new.op, new.axis)
            assert sum(a != b for a, b in zip(old.inputs, new.inputs, strict=True)) == 1
        elif kind == "resample":
            assert len(child) == len(parent) and len(changed) == 1
        elif kind == "insert":
            assert len(child) == len(parent) + 1
        else:
            assert len(child) == len(parent) - 1


def _index(description: str) -> int:
    return int(description.split()[2].rstrip(":"))


def only(kind: str):
    """evonorm_b with every mutation operator but ``kind`` switched off."""
    space = load_space("evonorm_b")
    weights = {k: 1.0 if k == kind else 0.0 for k in MUTATIONS}
    return dataclasses.replace(space, mutation=dataclasses.replace(space.mutation, **weights))


def test_insert_adds_one_node_that_exactly_one_later_input_reads():
    space = only("insert")
    rng = np.random.default_rng(21)
    for _ in range(300):
        parent = random_graph(space, rng)
        if len(parent) == space.graph.max_nodes:
            continue
        child, description = mutate(parent, space, rng)
        i = _index(description)
        assert child.nodes[: i - 4] == parent.nodes[: i - 4]  # earlier nodes untouched
        # Later nodes are the parent's, shifted by one, except for one input now reading i.
        rewired = 0
        for old, new in zip(parent.nodes[i - 4 :], child.nodes[i - 3 :], strict=True):
            assert (old.op, old.axis) == (new.op, new.axis)
            for j_old, j_new in zip(old.inputs, new.inputs, strict=True):
                if j_new == i:
                    rewired += 1
                else:
                    assert j_new == (j_old + 1 if j_old >= i else j_old)
        if i == parent.output + 1:  # a new output, reading the old one
            assert parent.output in child.node(i).inputs
        else:
            assert rewired == 1
        assert i in child.live


def test_delete_replaces_a_node_by_one_of_its_inputs():
    space = only("delete")
    rng = np.random.default_rng(22)
    for _ in range(300):
        parent = random_graph(space, rng)
        if len(parent) == 1:
            continue
        try:
            child, description = mutate(parent, space, rng)
        except GraphError:  # deleting its only live node would leave no layer
            assert len(parent.live) - 4 <= 2
            continue
        i = _index(description)
        removed = parent.node(i)
        assert len(child) == len(parent) - 1
        assert child.nodes[: i - 4] == parent.nodes[: i - 4]
        # Every later input that read i now reads one (the same) input of the removed node.
        replacement = set()
        for old, new in zip(parent.nodes[i - 3 :], child.nodes[i - 4 :], strict=True):
            assert (old.op, old.axis) == (new.op, new.axis)
            for j_old, j_new in zip(old.inputs, new.inputs, strict=True):
                if j_old == i:
                    replacement.add(j_new)
                else:
                    assert j_new == (j_old - 1 if j_old > i else j_old)
        assert len(replacement) <= 1 and replacement <= set(removed.inputs)


def test_insert_respects_the_size_limit_and_delete_keeps_one_node(tmp_path):
    only = "\n".join(f"{k} = {1.0 if k in ('insert', 'delete') else 0.0}" for k in MUTATIONS)
    space = narrow_space(tmp_path, only)
    rng = np.random.default_rng(5)
    full = LayerGraph.parse("max(sigmoid(x) * x, std_instance(x))")  # 4 nodes, the limit
    assert all(len(mutate(full, space, rng)[0]) == 3 for _ in range(30))
    single = LayerGraph.parse("max(x, 0)")
    assert all(len(mutate(single, space, rng)[0]) == 2 for _ in range(30))


def test_descriptions_name_the_node_and_both_versions():
    space = load_space("evonorm_b")
    rng = np.random.default_rng(11)
    _, description = mutate(baselines.get("evonorm_s0"), space, rng)
    kind, _node, index, *rest = description.split()
    assert kind in MUTATIONS and index.rstrip(":").isdigit()
    assert rest  # what the node was and became, or what was inserted/deleted


def test_parents_outside_the_space_are_refused():
    with pytest.raises(GraphError, match="outside search space 'evonorm_s'"):
        mutate(baselines.get("bn_relu"), load_space("evonorm_s"), np.random.default_rng(0))


SEQUENCE_SCRIPT = """
import json, sys
import numpy as np
from evonorm_search.space import load_space
from evonorm_search.mutation import mutate, random_graph
space = load_space("evonorm_b")
rng = np.random.default_rng(int(sys.argv[1]))
g = random_graph(space, rng)
out = [g.to_json()]
for _ in range(200):
    g, d = mutate(g, space, rng)
    out.append(d + " " + g.to_json())
print(json.dumps(out))
"""


@pytest.mark.slow
def test_same_seed_same_sequence_in_any_process():
    runs = []
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", SEQUENCE_SCRIPT, "42"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1]
    space = load_space("evonorm_b")
    rng = np.random.default_rng(42)
    g = random_graph(space, rng)
    here = [g.to_json()]
    for _ in range(200):
        g, d = mutate(g, space, rng)
        here.append(d + " " + g.to_json())
    assert here == runs[0]

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given

from evonorm_search import GraphNormAct, LayerGraph, Node, baselines
from evonorm_search.hashing import (
    _MEMO,
    BATCHES,
    CachedFitness,
    FECBackend,
    FunctionalCache,
    _evaluate,
    _make_probe,
    _quantized,
    functional_hash,
    probe,
    probe_outputs,
    proxy_key,
)
from evonorm_search.space import load_space

from strategies import layers

P = LayerGraph.parse

EQUIVALENT = [
    ("x * v1", "v1 * x"),  # commutativity
    ("-(-x) * v1", "x * v1"),  # double negation
    ("sqrt(square(x)) + v0", "abs(x) + v0"),
    ("abs(abs(x)) * v1", "abs(x) * v1"),
    ("max(x, x) * v1", "x * v1"),
    ("square(-x) + x", "square(x) + x"),
    ("tanh(-x) * v1", "-tanh(x) * v1"),
    ("x + mean_batch(x) - mean_batch(x)", "x + 0"),  # up to rounding
    ("x / std_batch(x + v1)", "x / std_batch(x)"),  # batch std ignores per-channel shifts
    ("x / std_instance(x + v0)", "x / std_instance(x)"),  # ... and so does instance std
    ("x / std_group(x - mean_group(x))", "x / std_group(x)"),
    ("mean_batch(mean_batch(x)) + x", "mean_batch(x) + x"),
    ("x * sigmoid(v1 * x) / std_group(x)", "sigmoid(x * v1) * x / std_group(x)"),
    ("(x - v0) - v1", "x - (v0 + v1)"),  # associativity, up to rounding
]

DIFFERENT = [
    ("x + 0", "x * v1"),  # only the parameter draws tell these apart
    ("max(abs(x) / abs(x), std_channel(x))", "std_channel(x)"),  # only small batches do
    ("x / std_instance(x)", "x / std_group(x)"),
    ("x / std_group(x)", "x / std_layer(x)"),
    ("x / std_instance(x)", "x / std_layer(x)"),
    ("x / std_layer(x)", "x / std_channel(x)"),
    ("x / std_instance(x)", "x / rms_instance(x)"),  # std vs rms
    ("x / std_batch(x)", "x / std_instance(x)"),
    ("x - mean_batch(x)", "x - mean_instance(x)"),
    ("x * v1 + v0", "x * v0 + v1"),
    ("x / v1", "x * v1"),
    ("log(x) + x", "sqrt(x) + x"),
    ("max(x, 0)", "abs(x)"),
    # Equal in training mode (both x / sqrt(eps)), not in eval mode: the running variance
    # of a batch constant starts at 1 and decays, while an instance statistic has none.
    ("x / std_batch(mean_batch(x))", "x / std_instance(mean_instance(x))"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_graphs_share_a_hash(a, b):
    assert functional_hash(P(a)) == functional_hash(P(b))


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_graphs_have_different_hashes(a, b):
    assert functional_hash(P(a)) != functional_hash(P(b))


def test_train_equal_eval_different_pair_is_really_equal_in_training():
    a, b = P(DIFFERENT[-1][0]), P(DIFFERENT[-1][1])
    p = _make_probe(0)
    train_a, eval_a = _evaluate(a, p, 0)
    train_b, eval_b = _evaluate(b, p, 0)
    torch.testing.assert_close(train_a, train_b)
    assert eval_b is None and not torch.allclose(eval_a, train_b)


def test_dead_code_does_not_change_the_hash():
    live = P("x * sigmoid(v1 * x) / std_group(x)")
    # The same graph after a dead node exp(v0) at index 4: every later index moves by one.
    shifted = [
        Node(n.op, tuple(j + 1 if j >= 4 else j for j in n.inputs), n.axis) for n in live.nodes
    ]
    dead = LayerGraph((Node("exp", (2,)), *shifted))
    assert 4 not in dead.live
    assert functional_hash(dead) == functional_hash(live)


@given(layers(max_nodes=6))
def test_probe_is_the_layers_own_semantics(g):
    """Each lane of the vectorised probe equals GraphNormAct on that lane's batch and
    parameters, in training mode, and in eval mode after training on the batches in turn."""
    p = _make_probe(0)
    train, evaluation = _evaluate(g, p, 0)
    if evaluation is None:
        evaluation = train
    for draw in (0, 2):
        layer = GraphNormAct(g, 6, groups=3, affine=False, dtype=torch.float64)
        with torch.no_grad():
            layer.v0.copy_(p.v0[draw * BATCHES].flatten())
            layer.v1.copy_(p.v1[draw * BATCHES].flatten())
        for k in range(BATCHES):
            lane = draw * BATCHES + k
            torch.testing.assert_close(layer(p.x[lane]), train[lane], equal_nan=True)
        layer.eval()
        for k in range(BATCHES):
            lane = draw * BATCHES + k
            torch.testing.assert_close(layer(p.x[lane]), evaluation[lane], equal_nan=True)


def test_memoised_and_fresh_evaluations_agree():
    graphs = [baselines.get(n) for n in baselines.names()] + [P("x / std_batch(x * v1) + x")]
    warm = [functional_hash(g) for g in graphs]
    _MEMO._entries.clear()  # a cold memo: every node evaluated afresh
    cold = [functional_hash(LayerGraph(g.nodes)) for g in reversed(graphs)][::-1]
    assert warm == cold


def test_a_hash_does_not_depend_on_what_was_hashed_before():
    # max(-0., 0.) and max(0., -0.) differ in sign: inputs are evaluated in canonical order.
    a = P("x * sigmoid(x / max(x * 0, -(x * 0)))")
    b = P("x * sigmoid(x / max(-(x * 0), x * 0))")
    _MEMO._entries.clear()
    a_first = functional_hash(a)
    _MEMO._entries.clear()
    b_first = functional_hash(b)
    assert a_first == b_first == functional_hash(LayerGraph(a.nodes))


def test_probe_outputs_are_the_callers_to_modify():
    g = P("x * v1")
    before = functional_hash(g)
    train, evaluation = probe_outputs(g)
    train *= 0
    evaluation += 1
    assert functional_hash(LayerGraph(g.nodes)) == before


def test_hash_format_and_seed():
    h = functional_hash(baselines.get("evonorm_s0"))
    assert len(h) == 32 and int(h, 16) >= 0
    assert functional_hash(baselines.get("evonorm_s0"), seed=1) != h


def test_quantization_fast_path():
    same = [np.array([1.0, -0.0, 1e-13, 2.5]), np.array([1.0, 0.0, 0.0, 2.5 + 2**-40])]
    assert _quantized(same[0]) == _quantized(same[1])
    assert _quantized(np.array([2.5])) != _quantized(np.array([2.5 + 2**-18]))


def test_quantization():
    a = np.array([1.0, 1.0 + 2**-30, -0.0, 1e-13, np.nan, -np.nan, np.inf, -np.inf, 3.0])
    b = np.array([1.0, 1.0, 0.0, 0.0, np.nan, np.nan, np.inf, -np.inf, 3.0 + 2**-20])
    qa, qb = _quantized(a), _quantized(b)
    as_ints = [np.frombuffer(q, dtype=np.uint64) for q in (qa, qb)]
    assert (as_ints[0][:8] == as_ints[1][:8]).all()
    assert as_ints[0][8] != as_ints[1][8]  # 24 significant bits keep 2^-20 relative


def test_numeric_figures():
    ok = probe(baselines.get("bn_relu"))
    assert ok.finite and 0.1 < ok.spread < 100 and 0.1 < ok.scale < 10
    assert not probe(P("x / v0")).finite  # v0 = 0 at initialisation
    assert probe(P("x * 0 + v1")).spread == 0.0
    assert probe(P("exp(x)")).scale > 1e4


HASH_SCRIPT = """
import json
from evonorm_search import baselines
from evonorm_search.hashing import functional_hash
print(json.dumps([functional_hash(baselines.get(n)) for n in baselines.names()]))
"""


@pytest.mark.slow
def test_hashes_are_the_same_in_any_process():
    env = {**os.environ, "PYTHONHASHSEED": "999"}
    out = subprocess.run(
        [sys.executable, "-c", HASH_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == [functional_hash(baselines.get(n)) for n in baselines.names()]


def test_proxy_key_depends_on_the_proxy_task_only(tmp_path):
    b = load_space("evonorm_b")
    assert proxy_key(b) == proxy_key(load_space("evonorm_s"))  # same proxy, other graphs
    assert proxy_key(b) != proxy_key(load_space("sequence"))
    longer = tmp_path / "longer.toml"
    longer.write_text(b.path.read_text().replace("steps = 300", "steps = 400"))
    assert proxy_key(load_space(longer)) != proxy_key(b)


class DictBackend(FECBackend):
    """A real (in-memory) FECBackend, as the store will provide."""

    def __init__(self):
        self.data, self.puts = {}, 0

    def get(self, functional_hash, proxy_key):
        return self.data.get((functional_hash, proxy_key))

    def put(self, functional_hash, proxy_key, fitness):
        self.puts += 1
        self.data.setdefault((functional_hash, proxy_key), fitness)


def test_functional_cache_lru_and_backend():
    backend = DictBackend()
    cache = FunctionalCache(capacity=2, backend=backend)
    first = CachedFitness("c1", {"resnet": 0.5})
    cache.put("h1", "p", first)
    cache.put("h1", "p", CachedFitness("c9", {}))  # the first fitness stays
    assert cache.get("h1", "p") == first and backend.puts == 1
    cache.put("h2", "p", CachedFitness("c2"))
    cache.put("h3", "p", CachedFitness("c3"))  # evicts h1 from memory, not from the backend
    assert len(cache) == 2
    assert cache.get("h1", "p") == first  # read through from the backend
    assert cache.get("h1", "other-proxy") is None
    assert (cache.hits, cache.misses) == (2, 1)
    with pytest.raises(ValueError, match="capacity"):
        FunctionalCache(capacity=0)


def test_the_first_fitness_stays_after_an_eviction():
    backend = DictBackend()
    cache = FunctionalCache(capacity=1, backend=backend)
    first = CachedFitness("c1")
    cache.put("h1", "p", first)
    cache.put("h2", "p", CachedFitness("c2"))  # evicts h1 from memory
    cache.put("h1", "p", CachedFitness("c9"))
    assert cache.get("h1", "p") == first == backend.get("h1", "p")

"""Figures for people: the Pareto front of a search and the drawing of a layer graph.

matplotlib's object API (``Figure``, no pyplot) renders off-screen without a display or a
global backend switch; files are written as PNG, SVG or PDF by their suffix.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evonorm_search.errors import EvoNormError
from evonorm_search.graph import LayerGraph

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["draw_graph", "graph_figure", "literal", "plot_front", "plot_transfer"]

_FORMATS = (".png", ".svg", ".pdf")
_MINIMISED = {"cost": "bytes per element (lower is better)", "nodes": "nodes (lower is better)"}


def literal(text: str) -> str:
    """``text`` as matplotlib shows it literally: a name or formula from the database holding
    two ``$`` would otherwise be parsed as mathtext (and fail on ``\\foo``).  Every ``$`` is
    escaped; matplotlib turns ``\\$`` back into ``$`` in text without math."""
    return str(text).replace("$", r"\$")


def _check_path(path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise EvoNormError(f"cannot draw {path}: use a file name ending in {', '.join(_FORMATS)}")
    if not path.resolve().parent.is_dir():
        raise EvoNormError(f"cannot write {path}: no directory {path.parent}")
    return path


def _value(point: Mapping[str, Any], objective: str) -> float | None:
    derived = {
        "mean": point.get("mean_score"),
        "cost": point.get("bytes_per_element"),
        "nodes": point.get("node_count"),
    }
    return (
        derived[objective] if objective in derived else (point.get("scores") or {}).get(objective)
    )


def plot_front(
    points: Sequence[Mapping[str, Any]],
    front: Sequence[Mapping[str, Any]],
    objectives: Sequence[str],
    path: Path,
    *,
    title: str = "",
    baselines: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Scatter every trained candidate (grey) and the front (highlighted, labelled with
    ids) over each pair of objectives: one panel for two objectives, a grid for more.
    ``baselines`` (rows with a ``name``, e.g. the zoo's layers on the same protocol) are
    drawn as blue diamonds labelled with their names; those without scores are left out."""
    from matplotlib.figure import Figure

    path = _check_path(path)
    pairs = list(itertools.combinations(objectives, 2)) or [(objectives[0], objectives[0])]
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    figure = Figure(figsize=(4.6 * columns, 4.2 * rows), layout="constrained")
    front_ids = {p["id"] for p in front}
    for index, (a, b) in enumerate(pairs):
        axes = figure.add_subplot(rows, columns, index + 1)
        for group, style in (
            ([p for p in points if p["id"] not in front_ids], dict(c="0.7", s=12, zorder=1)),
            (front, dict(c="tab:red", s=30, zorder=3, edgecolors="black", linewidths=0.5)),
            (
                baselines,
                dict(c="tab:blue", marker="D", s=30, zorder=4, edgecolors="black", linewidths=0.5),
            ),
        ):
            xy = [(_value(p, a), _value(p, b)) for p in group]
            xy = [(x, y) for x, y in xy if x is not None and y is not None]
            if xy:
                axes.scatter(*zip(*xy, strict=True), **style)
        for p, label in [*((p, str(p["id"])) for p in front), *((p, p["name"]) for p in baselines)]:
            x, y = _value(p, a), _value(p, b)
            if x is not None and y is not None:
                axes.annotate(
                    literal(label), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        axes.set_xlabel(
            literal(_MINIMISED.get(a, f"{a} accuracy" if a != "mean" else "mean accuracy"))
        )
        axes.set_ylabel(
            literal(_MINIMISED.get(b, f"{b} accuracy" if b != "mean" else "mean accuracy"))
        )
        axes.grid(alpha=0.3)
    shown = sum(_value(p, "mean") is not None for p in baselines)
    figure.suptitle(
        literal(
            f"{title}: {len(front)} on the front (red) of {len(points)} trained"
            + (f"; {shown} baselines (blue)" if baselines else "")
        )
    )
    figure.savefig(path, dpi=120)
    return path


def draw_graph(graph: LayerGraph, path: Path, *, title: str | None = None) -> Path:
    """Draw ``graph_figure`` into ``path`` (PNG, SVG or PDF)."""
    path = _check_path(path)
    graph_figure(graph, title=title).savefig(path, dpi=120)
    return path


def graph_figure(graph: LayerGraph, *, title: str | None = None) -> Figure:
    """The live part of a layer graph, inputs on the left and the output on the right,
    nodes labelled with their op (and axis), edges numbered by argument position."""
    import networkx as nx
    from matplotlib.figure import Figure

    view = graph.to_networkx()
    live = view.subgraph([n for n, d in view.nodes(data=True) if d["live"]]).copy()
    for depth, layer in enumerate(nx.topological_generations(live)):
        for n in layer:
            live.nodes[n]["depth"] = depth
    position = nx.multipartite_layout(live, subset_key="depth")
    labels = {
        n: literal(d["op"] if d["axis"] is None else f"{d['op']}\n{d['axis']}")
        for n, d in live.nodes(data=True)
    }
    width = 2.2 + 1.6 * (1 + max(d["depth"] for _, d in live.nodes(data=True)))
    figure = Figure(figsize=(width, 4.5), layout="constrained")
    axes = figure.add_subplot()
    output = view.graph["output"]
    colours = [
        "tab:orange"
        if n == output
        else "tab:green"
        if d["op"] in ("x", "0", "v0", "v1")
        else "tab:blue"
        for n, d in live.nodes(data=True)
    ]
    nx.draw_networkx_nodes(live, position, ax=axes, node_color=colours, node_size=1500, alpha=0.35)
    nx.draw_networkx_labels(live, position, labels, ax=axes, font_size=8)
    # Parallel edges (x + x) bend apart: the k-th argument from one node gets its own arc.
    bends = [f"arc3,rad={0.08 + 0.3 * k}" for k in range(1 + max(k for *_, k in live.edges))]
    nx.draw_networkx_edges(
        live, position, ax=axes, arrows=True, node_size=1500, connectionstyle=bends
    )
    arguments = {
        (u, v, k): str(d["arg"])
        for u, v, k, d in live.edges(keys=True, data=True)
        if len(graph.node(v).inputs) > 1
    }
    nx.draw_networkx_edge_labels(
        live, position, arguments, ax=axes, font_size=7, node_size=1500, connectionstyle=bends
    )
    axes.margins(0.15)
    axes.set_title(literal(title or graph.formula()), fontsize=9)
    axes.axis("off")
    return figure


def plot_transfer(results: Mapping[str, Any], network: str, path: Path) -> Path:
    """A transfer on ``network`` (``search.transfer.transfer_results``): each layer's
    transfer-test accuracy, mean with its 95% t-interval over seeds, and its learning
    curves (transfer-validation every ``eval_every`` steps: the mean over seeds, with the
    seeds' range shaded)."""
    import numpy as np
    from matplotlib.figure import Figure

    path = _check_path(path)
    layers = [layer for layer in results["layers"] if layer["networks"][network]["seeds"]]
    figure = Figure(figsize=(11, 4), layout="constrained")
    bars, curves = figure.subplots(1, 2)
    for y, layer in enumerate(layers):
        interval = layer["networks"][network]["transfer_test"]["interval"]
        if interval is None:
            continue
        mean, low, high = interval["mean"], interval["low"], interval["high"]
        error = None if low is None else [[mean - low], [high - mean]]
        color = "tab:blue" if layer["kind"] == "baseline" else "tab:red"
        bars.errorbar([interval["mean"]], [y], xerr=error, fmt="o", color=color, capsize=4)
        by_seed = [c for c in layer["networks"][network]["curves"].values() if c]
        if by_seed:
            steps = [step for step, _ in by_seed[0]]
            values = np.array([[v for _, v in c] for c in by_seed if len(c) == len(steps)])
            curves.plot(steps, values.mean(0), color=color, label=literal(layer["label"]))
            curves.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.15)
    bars.set_yticks(range(len(layers)), [literal(layer["label"]) for layer in layers])
    bars.set_xlabel("transfer-test accuracy (mean, 95% t-interval over seeds)")
    bars.set_title(literal(f"{results['search']} on {network}: zoo (blue), chosen (red)"))
    curves.set_xlabel("training step")
    curves.set_ylabel("transfer-validation accuracy")
    curves.set_title("learning curves (mean over seeds, range shaded)")
    if layers:
        curves.legend(fontsize="small")
    figure.savefig(path, dpi=110)
    return path

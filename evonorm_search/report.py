"""A search's report, as one HTML file (figures inlined) or Markdown (figures beside it).

What a user takes away from a search: its settings, the funnel (where candidates stopped),
the Pareto front (plot and table), the top layers with their formulas and graph drawings,
and their scores next to the baselines trained on the same protocol (``baselines
evaluate``).  Every text from the
database is escaped in HTML; Markdown table cells have their pipes escaped.
"""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evonorm_search.errors import EvoNormError
from evonorm_search.graph import LayerGraph

__all__ = ["write_report"]

FORMATS = (".html", ".md")


@dataclass
class _Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # caption, PNG


def _score(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _settings(search: dict[str, Any], status: dict[str, Any]) -> _Section:
    config = search["config"] or {}
    rows = [
        ["status", search["status"]],
        ["trained / budget", f"{status['trained']} / {search['budget']}"],
        ["screened", str(status["screened"])],
        ["space", search["space"]],
        ["strategy", search["strategy"]],
        ["dataset", str(config.get("dataset", "-"))],
        ["preset", str(config.get("preset") or "the space's")],
        ["architectures", ", ".join(search["architectures"])],
        ["objectives", ", ".join(search["objectives"])],
        ["population", str(config.get("population") or "the space's")],
        ["seed", str(search["seed"])],
        ["workers", str(config.get("workers", "-"))],
        ["started", search["created_at"]],
        ["finished", search["finished_at"] or "-"],
        ["code version", search["code_version"]],
    ]
    return _Section("Search settings", tables=[(["setting", "value"], rows)])


def _funnel(status: dict[str, Any], reasons: list[dict[str, Any]], directory: Path) -> _Section:
    from matplotlib.figure import Figure

    from evonorm_search.plots import literal
    from evonorm_search.worker_time import yield_line

    stages = {literal(f"stopped at {k}"): v for k, v in status["stopped_at"].items()}
    stages["trained"] = status["trained"]
    figure = Figure(figsize=(6.4, 3.2), layout="constrained")
    axes = figure.add_subplot()
    axes.barh(list(stages)[::-1], list(stages.values())[::-1], color="tab:blue")
    axes.set_xlabel("candidates")
    axes.set_title(f"the funnel: {status['screened']} candidates screened")
    path = directory / "funnel.png"
    figure.savefig(path, dpi=110)
    rows = [
        [r["status"], r["stage"] or "-", r["reason"] or "-", str(r["count"])] for r in reasons[:12]
    ]
    # Where the worker time went: the trials' time by fate, the rest orchestration.
    worker_s = status["worker_seconds"]
    by_fate = dict(status["worker_by_fate"])
    by_fate["orchestration"] = max(worker_s - sum(by_fate.values()), 0.0)
    time_rows = [
        [fate, f"{seconds / 3600:.2f}", f"{seconds / worker_s:.0%}" if worker_s else "-"]
        for fate, seconds in by_fate.items()
    ]
    summary = yield_line(status["trained"], worker_s, status["worker_hours_budget"])
    return _Section(
        "The funnel",
        text=[summary + "."],
        figures=[("candidates by the stage that stopped them", path)],
        tables=[
            (["status", "stage", "reason", "count"], rows),
            (["worker time by fate", "hours", "share"], time_rows),
        ],
    )


def _front(
    store: Any, name: str, search: dict[str, Any], directory: Path, zoo: list[dict[str, Any]]
) -> _Section:
    from evonorm_search.plots import plot_front

    objectives = search["objectives"]
    front = store.pareto(name)
    path = plot_front(
        store.trained_points(name),
        front,
        objectives,
        directory / "front.png",
        title=name,
        baselines=zoo,
    )
    rows = [
        [str(r["id"]), *[_score(r["objectives"][o]) for o in objectives], r["formula"]]
        for r in front
    ]
    return _Section(
        "The Pareto front",
        text=[f"{len(front)} non-dominated candidates over {', '.join(objectives)}."],
        figures=[
            (
                "every trained candidate (grey), the front (red) and the "
                "baselines on the same protocol (blue)",
                path,
            )
        ],
        tables=[(["id", *objectives, "formula"], rows)],
    )


def _top(store: Any, name: str, search: dict[str, Any], k: int, directory: Path) -> _Section:
    from evonorm_search.plots import draw_graph

    architectures = search["architectures"]
    best = store.top(name, k)
    rows, figures = [], []
    for rank, c in enumerate(best, start=1):
        rows.append(
            [
                str(rank),
                str(c["id"]),
                *[_score(c["scores"][a]) for a in architectures],
                _score(c["mean_score"]),
                c["formula"],
            ]
        )
        path = draw_graph(
            LayerGraph.from_json(c["graph"]),
            directory / f"layer-{c['id']}.png",
            title=f"candidate {c['id']}: {c['formula']}",
        )
        figures.append((f"candidate {c['id']}", path))
    return _Section(
        f"The top {len(best)} layers by mean accuracy",
        tables=[(["rank", "id", *architectures, "mean", "formula"], rows)],
        figures=figures,
    )


def _against_baselines(
    store: Any, name: str, search: dict[str, Any], top: int, zoo: list[dict[str, Any]]
) -> _Section:
    architectures = search["architectures"]
    title = "Against the baselines"
    if not zoo:
        return _Section(
            title,
            text=[
                "No baseline was trained on this search's protocol: "
                "`evonorm-search baselines evaluate` with the search's "
                "space, data and preset trains them."
            ],
        )
    rows = []
    for c in store.top(name, top):
        rows.append(
            [
                f"candidate {c['id']}",
                *[_score(c["scores"][a]) for a in architectures],
                _score(c["mean_score"]),
                c["formula"],
            ]
        )
    for b in zoo:
        scores = b["scores"] or {}
        fate = "" if b["status"] == "trained" or b["twin"] else f" ({b['status']} at {b['stage']})"
        rows.append(
            [
                b["name"] + fate,
                *[_score(scores.get(a)) for a in architectures],
                _score(b["mean_score"]),
                b["formula"],
            ]
        )
    return _Section(
        title,
        text=[
            "The top layers and the baseline zoo, trained on the same "
            "protocol (data, preset, steps, architectures)."
        ],
        tables=[(["layer", *architectures, "mean", "formula"], rows)],
    )


def _transfer(store: Any, name: str, directory: Path) -> _Section | None:
    """The transfer (``evonorm-search transfer``), where there is one: per network the
    table with intervals, the comparison fixed in advance, and the figure."""
    from evonorm_search.plots import plot_transfer
    from evonorm_search.search.transfer import comparison_table, stored_transfer, transfer_table

    results = stored_transfer(store, name)
    if results is None:
        return None
    s = results["settings"]
    section = _Section(
        "Transfer to bigger networks",
        text=[
            f"Trained from scratch for {s['steps']} steps at batch {s['batch_size']} on seeds "
            f"{', '.join(map(str, results['seeds']))}, shared by every layer; accuracy on the "
            "transfer-validation and transfer-test slices of the training data, which no "
            "training reads (test: CIFAR-10's test_batch, where present). Mean [95% "
            "t-interval] over seeds."
        ],
    )
    for network, comparison in results["comparisons"].items():
        section.tables.append(transfer_table(results, network))
        if comparison["comparator"] is not None:
            statement, header, rows = comparison_table(comparison)
            section.text.append(f"{network}, the comparison fixed in advance: {statement}.")
            section.tables.append((header, rows))
        path = plot_transfer(results, network, directory / f"transfer-{network}.png")
        section.figures.append((f"transfer to {network}: accuracy and learning curves", path))
    return section


def _sections(store: Any, name: str, top: int, directory: Path) -> list[_Section]:
    search, status = store.search(name), store.status(name)
    zoo = store.baseline_layers(name)
    sections = [
        _settings(search, status),
        _funnel(status, store.funnel(name), directory),
        _front(store, name, search, directory, zoo),
        _top(store, name, search, top, directory),
        _against_baselines(store, name, search, top, zoo),
    ]
    transfer = _transfer(store, name, directory)
    return sections if transfer is None else [*sections, transfer]


def write_report(store: Any, name: str, path: Path, *, top: int = 5) -> Path:
    """Write the report of search ``name`` to ``path`` (.html: one self-contained file;
    .md: figures as PNG files in a ``<stem>_files`` directory beside it)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise EvoNormError(f"cannot write {path}: a report is .html or .md")
    if not path.resolve().parent.is_dir():
        raise EvoNormError(f"cannot write {path}: no directory {path.parent}")
    store.search(name)  # an unknown search fails before anything is written
    if path.suffix.lower() == ".html":
        with tempfile.TemporaryDirectory() as scratch:
            sections = _sections(store, name, top, Path(scratch))
            text = _html(name, sections)
    else:
        figures = path.parent / f"{path.stem}_files"
        figures.mkdir(exist_ok=True)
        text = _markdown(name, _sections(store, name, top, figures), path.parent)
    path.write_text(text, encoding="utf-8")
    return path


def _html(name: str, sections: Sequence[_Section]) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(name)}: "
        "evonorm-search report</title><style>body{font-family:sans-serif;max-width:60em;"
        "margin:auto} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:left} img{max-width:100%}</style></head><body>",
        f"<h1>Search {e(name)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        parts += [f"<p>{e(t)}</p>" for t in s.text]
        for header, rows in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for caption, figure in s.figures:
            data = base64.b64encode(figure.read_bytes()).decode()
            parts.append(
                f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _markdown(name: str, sections: Sequence[_Section], base: Path) -> str:
    def cell(text: str) -> str:
        """Text as itself: no markup, no HTML or entity, no math, no table break, and its
        leading and trailing white space kept (Markdown strips it; character references
        keep it)."""
        for special in "\\`*_[]<>|#$&~!":
            text = text.replace(special, "\\" + special)
        text = text.replace("\n", " ")
        core = text.strip()
        start = text.index(core) if core else len(text)
        end = start + len(core)
        kept = ["".join(f"&#{ord(c)};" for c in part) for part in (text[:start], text[end:])]
        return kept[0] + core + kept[1]

    lines = [f"# Search {cell(name)}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for t in s.text:
            lines += [cell(t), ""]
        for header, rows in s.tables:
            lines.append("| " + " | ".join(cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        for caption, figure in s.figures:
            lines += [f"![{cell(caption)}]({figure.relative_to(base).as_posix()})", ""]
    return "\n".join(lines)

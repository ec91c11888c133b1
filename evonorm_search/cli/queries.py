"""Reading the results database: ``status``, ``pareto``, ``show``; and ``db upgrade``,
which creates or migrates it."""

from __future__ import annotations

from pathlib import Path

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import open_store
from evonorm_search.cli.render import (
    fate,
    objective,
    print_candidate,
    print_csv,
    print_json,
    print_table,
    say,
    score,
)
from evonorm_search.cli.runs import note_no_baselines


@click.command()
@click.argument("name", required=False)
@options.db
@options.output_format()
def status(name: str | None, db_url: str | None, fmt: str) -> None:
    """Progress of the search NAME (funnel, best so far), or of every search."""
    from evonorm_search.store import mask

    with open_store(db_url) as store:
        if name is None:
            rows = store.searches()
            if fmt == "json":
                print_json(rows)
                return
            print_table(
                f"searches in {mask(store.url)}",
                ["name", "space", "strategy", "status", "trained", "screened", "best mean"],
                [
                    [
                        r["name"],
                        r["space"],
                        r["strategy"],
                        r["status"],
                        f"{r['trained']}/{r['budget']}",
                        str(r["screened"]),
                        score((r["best"] or {}).get("mean_score")),
                    ]
                    for r in rows
                ],
            )
            return
        info = store.status(name)
        funnel = store.funnel(name)
    if fmt == "json":
        print_json({**info, "funnel": funnel})
        return
    from evonorm_search.worker_time import shares, yield_line

    best = info["best"]
    rejected = ", ".join(f"{stage} {n}" for stage, n in info["rejected"].items()) or "none"
    print_table(
        f"search {info['name']}",
        ["", "value"],
        [
            ["space / strategy", f"{info['space']} / {info['strategy']}"],
            ["status", info["status"]],
            ["trained", f"{info['trained']} of budget {info['budget']}"],
            ["screened", str(info["screened"])],
            [
                "queued / running / failed",
                f"{info['queued']} / {info['running']} / {info['failed']}",
            ],
            ["duplicates", str(info["duplicates"])],
            ["rejected by stage", rejected],
            [
                "worker time",
                yield_line(info["trained"], info["worker_seconds"], info["worker_hours_budget"]),
            ],
            ["worker time by fate", shares(info["worker_by_fate"], info["worker_seconds"])],
            ["Pareto front", f"{info['front_size']} candidates"],
            [
                "best (mean accuracy)",
                "-"
                if best is None
                else f"#{best['id']} {score(best['mean_score'])}  {best['formula']}",
            ],
            [
                "after the search",
                ", ".join(
                    f"{stage} {n['runs']} runs of {n['layers']} layers"
                    for stage, n in sorted(info.get("after", {}).items())
                )
                or "-",
            ],
        ],
    )
    print_table(
        "funnel",
        ["status", "stage", "reason", "count"],
        [[r["status"], r["stage"] or "-", r["reason"] or "-", str(r["count"])] for r in funnel],
    )


@click.command()
@click.argument("name")
@options.db
@click.option(
    "--objectives",
    default=None,
    metavar="LIST",
    help="Comma-separated objectives: architecture names (accuracy), mean, cost, nodes "
    "(default: the search's own, per-architecture accuracy unless it chose others).",
)
@options.output_format("csv")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the front over every trained candidate (PNG, SVG or PDF).",
)
@click.option(
    "--with-baselines",
    is_flag=True,
    help="Also the zoo's layers evaluated on this search's protocol (`baselines evaluate`): "
    "JSON becomes {front, baselines}, tables and CSV gain a baseline column.",
)
def pareto(
    name: str,
    db_url: str | None,
    objectives: str | None,
    fmt: str,
    plot: Path | None,
    with_baselines: bool,
) -> None:
    """The Pareto front of the search NAME: its non-dominated trained candidates."""
    chosen = [o.strip() for o in objectives.split(",")] if objectives else None
    with open_store(db_url) as store:
        front = store.pareto(name, chosen)
        search = store.search(name)
        chosen = chosen or search["objectives"]
        points = store.trained_points(name) if plot else []
        zoo = store.baseline_layers(name, chosen) if with_baselines else []
    if with_baselines and not zoo:
        note_no_baselines(search, db_url)
    if plot:
        from evonorm_search.plots import plot_front

        plot_front(points, front, chosen, plot, title=name, baselines=zoo)
    from evonorm_search.store import pareto_json

    shown = pareto_json(front, zoo)
    rows, zoo_rows = shown["front"], shown["baselines"]
    if fmt == "json":
        print_json(shown if with_baselines else rows)
    elif fmt == "csv":
        print_csv(rows, chosen, zoo_rows if with_baselines else None)
    else:
        marked = [["", r] for r in rows] + [[r["name"], r] for r in zoo_rows]
        print_table(
            f"Pareto front of {name}: {len(rows)} candidates"
            + (f", and {len(zoo_rows)} baselines on its protocol" if with_baselines else ""),
            ["id", *(["baseline"] if with_baselines else []), *chosen, "formula"],
            [
                [
                    str(r["id"]),
                    *([layer] if with_baselines else []),
                    *[objective(r["objectives"][o]) for o in chosen],
                    r["formula"] + fate(r),
                ]
                for layer, r in marked
            ],
        )
    if plot:
        say(f"wrote {plot}")


@click.command()
@click.argument("candidate_id", metavar="ID", type=int)
@options.db
@options.output_format()
@click.option(
    "--draw",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Draw the candidate's graph (PNG, SVG or PDF).",
)
def show(candidate_id: int, db_url: str | None, fmt: str, draw: Path | None) -> None:
    """One candidate: formula, scores, fate, evaluations and lineage."""
    with open_store(db_url) as store:
        record = store.candidate(candidate_id)
    if draw:
        from evonorm_search.graph import LayerGraph
        from evonorm_search.plots import draw_graph

        if record["formula"] is None:
            raise click.ClickException(f"candidate {candidate_id} did not parse: no graph to draw")
        draw_graph(
            LayerGraph.from_json(record["graph"]),
            draw,
            title=f"#{candidate_id}  {record['formula']}",
        )
    if fmt == "json":
        print_json(record)
    else:
        print_candidate(record)
    if draw:
        say(f"wrote {draw}")


@click.group()
def db() -> None:
    """Manage the results database."""


@db.command()
@options.db
def upgrade(db_url: str | None) -> None:
    """Create the database, or migrate it to this version's schema."""
    from evonorm_search.store import default_url, make_engine, mask
    from evonorm_search.store import upgrade as migrate

    url = db_url or default_url()
    engine = make_engine(url)
    try:
        before, after = migrate(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"{mask(url)} is at the current schema ({after})")
    else:
        click.echo(f"{mask(url)}: schema {before or '(new database)'} -> {after}")

"""The ``evonorm-search`` command line.

Every error a user can cause (bad formula or graph JSON, unknown space or baseline, bad
option) ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from evonorm_search import __version__, baselines
from evonorm_search.errors import EvoNormError, GraphError, SpaceError
from evonorm_search.space import DTYPES as SPACE_DTYPES
from evonorm_search.stats import interval_text

if TYPE_CHECKING:
    from evonorm_search.codegen.compiler import CompiledLayer
    from evonorm_search.graph import LayerGraph

FORMATS = click.Choice(["table", "json"])


class _OneLineErrors(click.Group):
    """Runs click without its standalone handling so that usage errors and our own errors
    print as one line and exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # bare `evonorm-search`: the help
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            _fail(e.format_message() + hint)
        except (EvoNormError, click.ClickException) as e:
            _fail(e.format_message() if isinstance(e, click.ClickException) else str(e))
        except click.Abort:
            _fail("aborted", code=130)
        except KeyboardInterrupt:
            _fail("interrupted", code=130)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"evonorm-search: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def _print_table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table whose every string is shown as itself: text from the database (names,
    reasons, formulas) is never read as rich markup (``[red]``) or emoji codes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if title is not None:  # a line of its own: a table would wrap it to the table's width
        console.print(Text(title, style="bold"), soft_wrap=True)
    table = Table(show_lines=False)
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="evonorm-search")
def cli() -> None:
    """Search for normalization-activation layers (EvoNorm-style evolution)."""


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def spaces(fmt: str) -> None:
    """List the shipped search spaces."""
    from evonorm_search.space import list_spaces, load_space

    loaded = [load_space(name) for name in list_spaces()]
    if fmt == "json":
        _print_json(
            [
                {
                    "name": s.name,
                    "description": s.description,
                    "tensor": s.tensor,
                    "axes": list(s.graph.axes),
                    "max_nodes": s.graph.max_nodes,
                    "architectures": list(s.proxy.architectures),
                }
                for s in loaded
            ]
        )
        return
    _print_table(
        "search spaces",
        ["name", "tensor", "axes", "max nodes", "description"],
        [
            [s.name, s.tensor, ", ".join(s.graph.axes), str(s.graph.max_nodes), s.description]
            for s in loaded
        ],
    )


@cli.group("baselines", invoke_without_command=True)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def baselines_command(ctx: click.Context, fmt: str) -> None:
    """List the baseline zoo: known layers as formulas.

    `baselines evaluate` trains the zoo's layers of a space as a search trains candidates,
    so that `pareto NAME --with-baselines` compares them with a search's front.
    """
    if ctx.invoked_subcommand is not None:
        return
    zoo = [baselines.describe(name) for name in baselines.names()]
    if fmt == "json":
        _print_json(
            [
                {
                    "name": b.name,
                    "formula": b.formula,
                    "tensor": b.tensor,
                    "description": b.description,
                    "structural_hash": baselines.get(b.name).structural_hash(),
                }
                for b in zoo
            ]
        )
        return
    _print_table(
        "baseline layers",
        ["name", "tensor", "formula", "description"],
        [[b.name, b.tensor, b.formula, b.description] for b in zoo],
    )


# ignore_unknown_options: a formula may start with "-" ("-x / std_group(x)").
@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("expr")
@click.option(
    "--space",
    "space_names",
    multiple=True,
    metavar="NAME",
    help="Check the graph against these search spaces (default: every shipped one).",
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def formula(expr: str, space_names: tuple[str, ...], fmt: str) -> None:
    """Canonicalise a layer given as a formula or graph JSON.

    EXPR is a formula such as "x * sigmoid(v1 * x) / std_group(x)", or graph JSON
    (text starting with '{'). Search-space checks apply to the graph as given, dead
    nodes included, and number its nodes as given.
    """
    from evonorm_search.graph import as_graph
    from evonorm_search.hashing import functional_hash
    from evonorm_search.space import list_spaces, load_space

    graph = as_graph(expr).validate()
    canonical = graph.canonical()
    spaces_checked = {
        name: load_space(name).violations(graph) for name in (space_names or list_spaces())
    }
    info = {
        "formula": canonical.formula(),
        "structural_hash": graph.structural_hash(),
        "functional_hash": functional_hash(graph),
        "shape_class": str(canonical.shape_classes[canonical.output]),
        "nodes": len(canonical),
        "input_nodes": len(graph),
        "batch_statistics": canonical.uses_batch_statistics,
        "space_violations": spaces_checked,
        "graph": canonical.to_dict(),
    }
    if fmt == "json":
        _print_json(info)
        return
    rows = [
        ["formula", info["formula"]],
        ["structural hash", info["structural_hash"]],
        ["functional hash", info["functional_hash"]],
        ["shape class", info["shape_class"]],
        ["nodes", f"{info['nodes']} canonical ({info['input_nodes']} as given)"],
        ["batch statistics", "yes" if info["batch_statistics"] else "no (batch-independent)"],
        *[
            [f"space {name}", "ok" if not problems else "; ".join(problems)]
            for name, problems in spaces_checked.items()
        ],
        ["json", canonical.to_json()],
    ]
    _print_table(None, ["", "value"], rows)


# -- the results database -------------------------------------------------------------


def _db_option(function: Any) -> Any:
    return click.option(
        "--db",
        "db_url",
        default=None,
        metavar="URL",
        help="Results database (default: $EVONORM_DB, else sqlite:///evonorm.db).",
    )(function)


def _open_store(db_url: str | None) -> Any:
    """A read-only store: queries never create, migrate or write a database."""
    from evonorm_search.store import Store

    return Store(db_url, readonly=True)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@cli.command()
@click.argument("name", required=False)
@_db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def status(name: str | None, db_url: str | None, fmt: str) -> None:
    """Progress of the search NAME (funnel, best so far), or of every search."""
    from evonorm_search.store import mask

    with _open_store(db_url) as store:
        if name is None:
            rows = store.searches()
            if fmt == "json":
                _print_json(rows)
                return
            _print_table(
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
                        _score((r["best"] or {}).get("mean_score")),
                    ]
                    for r in rows
                ],
            )
            return
        info = store.status(name)
        funnel = store.funnel(name)
    if fmt == "json":
        _print_json({**info, "funnel": funnel})
        return
    from evonorm_search.worker_time import shares, yield_line

    best = info["best"]
    rejected = ", ".join(f"{stage} {n}" for stage, n in info["rejected"].items()) or "none"
    _print_table(
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
                else f"#{best['id']} {_score(best['mean_score'])}  {best['formula']}",
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
    _print_table(
        "funnel",
        ["status", "stage", "reason", "count"],
        [[r["status"], r["stage"] or "-", r["reason"] or "-", str(r["count"])] for r in funnel],
    )


@cli.command()
@click.argument("name")
@_db_option
@click.option(
    "--objectives",
    default=None,
    metavar="LIST",
    help="Comma-separated objectives: architecture names (accuracy), mean, cost, nodes "
    "(default: the search's own, per-architecture accuracy unless it chose others).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
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
    with _open_store(db_url) as store:
        front = store.pareto(name, chosen)
        search = store.search(name)
        chosen = chosen or search["objectives"]
        points = store.trained_points(name) if plot else []
        zoo = store.baseline_layers(name, chosen) if with_baselines else []
    if with_baselines and not zoo:
        click.echo(
            f"evonorm-search: no baselines evaluated on the protocol of search {name}: "
            f"`{_evaluate_command(search, db_url)}` trains them",
            err=True,
        )
    if plot:
        from evonorm_search.plots import plot_front

        plot_front(points, front, chosen, plot, title=name, baselines=zoo)
    from evonorm_search.store import pareto_json

    shown = pareto_json(front, zoo)
    rows, zoo_rows = shown["front"], shown["baselines"]
    if fmt == "json":
        _print_json(shown if with_baselines else rows)
    elif fmt == "csv":
        _print_csv(rows, chosen, zoo_rows if with_baselines else None)
    else:
        marked = [["", r] for r in rows] + [[r["name"], r] for r in zoo_rows]
        _print_table(
            f"Pareto front of {name}: {len(rows)} candidates"
            + (f", and {len(zoo_rows)} baselines on its protocol" if with_baselines else ""),
            ["id", *(["baseline"] if with_baselines else []), *chosen, "formula"],
            [
                [
                    str(r["id"]),
                    *([layer] if with_baselines else []),
                    *[_objective(r["objectives"][o]) for o in chosen],
                    r["formula"] + _fate(r),
                ]
                for layer, r in marked
            ],
        )
    if plot:
        click.echo(f"wrote {plot}", err=True)


def _fate(row: dict[str, Any]) -> str:
    """What a baseline row's scores are, when they are not its own training's."""
    if row.get("twin") is not None:
        return f"  (FEC hit of {row['twin']})"
    if row.get("status", "trained") != "trained":
        return f"  ({row['status']} at {row['stage']})"
    return ""


def _evaluate_command(search: dict[str, Any], db_url: str | None) -> str:
    """The `baselines evaluate` command line for the protocol of ``search``."""
    import shlex

    from evonorm_search.store import mask

    config = search["config"] or {}
    words = ["evonorm-search", "baselines", "evaluate", "--space", search["space"]]
    for option, key, default in (
        ("--data", "dataset", "digits"),
        ("--data-dir", "data_dir", None),
        ("--preset", "preset", None),
        ("--seed", "seed", 0),
    ):
        if config.get(key, default) != default:
            words += [option, str(config[key])]
    return shlex.join(words + (["--db", mask(db_url)] if db_url else []))


def _objective(value: float | int | None) -> str:
    return str(value) if isinstance(value, int) else _score(value)


def _print_csv(
    rows: list[dict[str, Any]],
    objectives: list[str],
    baseline_rows: list[dict[str, Any]] | None = None,
) -> None:
    """The front's rows; with ``baseline_rows`` (even none) a last column ``baseline``
    that names the zoo layer of each of those rows, appended after the front's."""
    import csv

    extra = baseline_rows is not None
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["id", *objectives, "mean_score", "formula", *(["baseline"] * extra)])
    for r in [*rows, *(baseline_rows or [])]:
        writer.writerow(
            [
                r["id"],
                *[r["objectives"][o] for o in objectives],
                r["mean_score"],
                r["formula"],
                *([r.get("name", "")] * extra),
            ]
        )


@cli.command()
@click.argument("candidate_id", metavar="ID", type=int)
@_db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option(
    "--draw",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Draw the candidate's graph (PNG, SVG or PDF).",
)
def show(candidate_id: int, db_url: str | None, fmt: str, draw: Path | None) -> None:
    """One candidate: formula, scores, fate, evaluations and lineage."""
    with _open_store(db_url) as store:
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
        _print_json(record)
    else:
        _print_candidate(record)
    if draw:
        click.echo(f"wrote {draw}", err=True)


def _compiled_summary(c: dict[str, Any] | None) -> str:
    """The compile stage's figures in one line."""
    if not c:
        return "-"
    kernels = (
        f"{c['kernels']} kernels for {c['target']}, {c['registers']} registers, "
        f"{c['spill_bytes']} B spilled, {c['compile_s']:.2f} s; "
        if c["kernels"]
        else ""
    )
    return (
        f"{kernels}traffic {c['traffic_fwd']}/{c['traffic_bwd']} at "
        f"{','.join(map(str, c['shape']))} {c['dtype']}; kernels {c['kernel_hash']}"
        + ("; verified" if c["verified"] else "")
    )


def _print_candidate(r: dict[str, Any]) -> None:
    fate = r["status"] + (f" at {r['stage']}" if r["stage"] else "")
    fate += f": {r['reason']}" if r["reason"] else ""
    scores = r["scores"] or {}
    _print_table(
        f"candidate {r['id']} of search {r['search']}",
        ["", "value"],
        [
            ["formula", r["formula"] or f"(did not parse) {r['graph']}"],
            ["fate", fate + (f" ({r['detail']})" if r["detail"] else "")],
            ["scores", ", ".join(f"{a} {_score(v)}" for a, v in scores.items()) or "-"],
            ["mean accuracy", _score(r["mean_score"])],
            ["on the Pareto front", "yes" if r["on_front"] else "no"],
            ["duplicate of", str(r["duplicate_of"]) if r["duplicate_of"] else "-"],
            ["nodes", str(r["node_count"]) if r["node_count"] is not None else "-"],
            ["structural hash", r["structural_hash"] or "-"],
            ["functional hash", r["functional_hash"] or "-"],
            ["compiled", _compiled_summary(r.get("compiled"))],
        ],
    )
    if r["evaluations"]:
        _print_table(
            "evaluations",
            ["stage", "architecture", "seed", "steps", "accuracy", "status", "node"],
            [
                [
                    e["stage"],
                    e["architecture"],
                    str(e["seed"]),
                    str(e["steps"]),
                    _score(e["accuracy"]),
                    e["status"],
                    (e.get("node") or "-")[:16],
                ]
                for e in r["evaluations"]
            ],
        )
    if r.get("transfer"):
        _print_table(
            "transfer: accuracy, mean [95% t-interval] over seeds",
            ["network", "lr", "seeds", "transfer-validation", "transfer-test", "test"],
            [
                [
                    t["network"],
                    f"{t['learning_rate']:g}",
                    f"{t['completed']} of {len(t['seeds'])}",
                    interval_text(t["transfer_val"]),
                    interval_text(t["transfer_test"]),
                    interval_text(t["test"]),
                ]
                for t in r["transfer"]
            ],
        )
    _print_table(
        "lineage (newest first)",
        ["id", "status", "mean", "mutation", "formula"],
        [
            [
                str(a["id"]),
                a["status"],
                _score(a["mean_score"]),
                a["mutation"] or "(initial)",
                a["formula"] or "-",
            ]
            for a in r["lineage"]
        ],
    )


# -- compiling a layer -----------------------------------------------------------------

# The spaces' dtype names, and float64 (a gradcheck dtype spaces do not offer).
DTYPES = {**SPACE_DTYPES, "fp64": "float64", "float64": "float64"}
# (target, shape, dtype) where no search space says
DEFAULT_COMPILE: tuple[str, tuple[int, ...], str] = ("sm_90a", (128, 64, 56, 56), "bfloat16")


class _Shape(click.ParamType):
    """A tensor shape written N,C[,spatial...]: 2 to 5 positive sizes."""

    name = "N,C,H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            dims = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            dims = ()
        if not (2 <= len(dims) <= 5 and min(dims) >= 1):
            self.fail(
                f"expected 2 to 5 comma-separated positive sizes such as 128,64,56,56, "
                f"got {value!r}",
                param,
                ctx,
            )
        return dims


def _compile_subject(
    subject: str, db_url: str | None
) -> tuple[LayerGraph, tuple[str, tuple[int, ...], str]]:
    """The graph a ``compile`` argument names (a formula, graph JSON or a candidate id) and
    the default (target, shape, dtype): the candidate's search space's, where it has one."""
    from evonorm_search.graph import as_graph

    if not subject.isdigit():
        return as_graph(subject).validate(), DEFAULT_COMPILE
    from evonorm_search.space import load_space

    with _open_store(db_url) as store:
        record = store.candidate(int(subject))
        space_name = store.search(record["search"])["space"]
    try:
        graph = as_graph(record["graph"]).validate()
    except GraphError as e:
        raise GraphError(f"candidate {subject} is not a valid layer: {e}") from None
    try:
        c = load_space(space_name).compile
    except SpaceError as e:
        click.echo(
            f"evonorm-search: warning: {e}; compiling at the default target, shape and dtype",
            err=True,
        )
        return graph, DEFAULT_COMPILE
    return graph, (c.target, tuple(c.reference_shape), c.dtype)


# ignore_unknown_options: a formula may start with "-" ("-x / std_group(x)").
@cli.command("compile", context_settings={"ignore_unknown_options": True})
@click.argument("subject", metavar="EXPR|ID")
@_db_option
@click.option(
    "--target",
    default=None,
    help="GPU target, e.g. sm_90a or sm_80 (default: the candidate's space's, else sm_90a).",
)
@click.option(
    "--shape",
    type=_Shape(),
    default=None,
    help="Reference input shape (default: the space's, else 128,64,56,56).",
)
@click.option(
    "--dtype",
    type=click.Choice(list(DTYPES)),
    default=None,
    help="Input dtype (default: the space's, else bf16).",
)
@click.option(
    "--groups",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Groups of group statistics (the largest divisor of C not above it).",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check the kernels against the eager layer in triton's interpreter.",
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option(
    "--source",
    "source_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write the generated Triton module into this folder.",
)
def compile_command(
    subject: str,
    db_url: str | None,
    target: str | None,
    shape: tuple[int, ...] | None,
    dtype: str | None,
    groups: int,
    verify: bool,
    fmt: str,
    source_dir: Path | None,
) -> None:
    """Compile a layer to its fused Triton kernels and report their costs.

    EXPR|ID is a formula, graph JSON or the id of a candidate in the database (whose
    search space's [compile] section gives the default target, shape and dtype).  Kernels
    are compiled ahead of time for the GPU target, no GPU needed, and report registers,
    spills and shared memory; the traffic model counts the full-size tensor elements each
    training step moves per element (at least 2 forward, 3 backward).
    """
    graph, (default_target, default_shape, default_dtype) = _compile_subject(subject, db_url)
    if importlib.util.find_spec("triton") is None:
        raise click.ClickException(
            "triton is not installed: the compiler needs it (pip install triton, on Linux)"
        )
    # The compiler's modules load only once triton is known to be installed.
    import torch

    from evonorm_search.codegen.aot import TARGETS, has_cuda_backend
    from evonorm_search.codegen.compiler import compile_layer
    from evonorm_search.codegen.runtime import write_source
    from evonorm_search.codegen.source import generate, unsupported

    target = target or default_target
    if target not in TARGETS:  # checked here, not by click: a search space may name any sm_XY
        raise click.BadParameter(
            f"{target!r} is not a target of the compiler (choose from {', '.join(TARGETS)})",
            param_hint="'--target'",
        )
    shape = shape or default_shape
    dtype_name = DTYPES[dtype] if dtype else default_dtype
    aot = has_cuda_backend()
    if not aot:
        click.echo(
            f"evonorm-search: warning: the installed triton has no CUDA backend: no "
            f"kernels compiled for {target}, traffic model only",
            err=True,
        )
    if source_dir is not None and unsupported(graph) is None:
        try:
            path = write_source(generate(graph), source_dir)
        except OSError as e:
            raise click.ClickException(f"cannot write into {source_dir}: {e.strerror}") from None
        click.echo(f"wrote {path}", err=True)
    result = compile_layer(
        graph,
        target=target,
        shape=shape,
        dtype=getattr(torch, dtype_name),
        groups=groups,
        verify=verify,
        aot=aot,
    )
    if not result.ok:
        raise click.ClickException(f"cannot compile {result.formula}: {result.reason}")
    if fmt == "json":
        _print_json(result.to_dict())
        return
    _print_compiled(result)


def _print_compiled(r: CompiledLayer) -> None:
    if r.kernels:
        _print_table(
            f"{len(r.kernels)} kernels of {r.formula} for {r.target} at "
            f"{','.join(map(str, r.shape))} {r.dtype}",
            [
                "kernel",
                "mode",
                "stage",
                "direction",
                "registers",
                "spill bytes",
                "shared bytes",
                "compile s",
            ],
            [
                [
                    k.kernel,
                    k.mode,
                    "-" if k.stage is None else str(k.stage),
                    k.direction,
                    str(k.registers),
                    str(k.spill_bytes),
                    str(k.shared_bytes),
                    f"{k.compile_s:.2f}",
                ]
                for k in r.kernels
            ],
        )
        click.echo(
            f"compile: {r.compile_s:.2f} s for {len(r.kernels)} kernels "
            f"({r.seconds:.2f} s for the whole stage)"
        )
    else:
        click.echo(f"formula: {r.formula}")
    click.echo(
        f"traffic: forward {r.traffic_fwd}, backward {r.traffic_bwd} full-size elements "
        f"moved per element (minimum 2 and 3)"
    )
    click.echo(f"kernel hash: {r.kernel_hash}")
    click.echo(
        "verified against the eager layer in triton's interpreter: "
        + ("yes" if r.verified else "no (--no-verify)")
    )


# -- exporting a layer ---------------------------------------------------------------------


def _class_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from evonorm_search.export import check_class_name

    try:
        return check_class_name(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


@cli.command("export")
@click.argument("candidate_id", metavar="ID", type=int)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Python file to write.",
)
@click.option(
    "--class-name",
    default="EvolvedNormAct",
    show_default=True,
    callback=_class_name,
    help="The module class's name.",
)
@click.option(
    "--kernels",
    is_flag=True,
    help="Also carry the layer's Triton kernels, run on CUDA tensors where triton "
    "is installed (PyTorch ops elsewhere).",
)
@_db_option
def export_command(
    candidate_id: int, output: Path, class_name: str, kernels: bool, db_url: str | None
) -> None:
    """Write candidate ID as a standalone PyTorch module that needs only torch.

    The class computes the candidate's canonical graph as GraphNormAct does, with the same
    state-dict keys; its docstring gives the formula, the search, the candidate and its
    scores.  With --kernels the file also holds the layer's generated Triton kernels, their
    launcher and custom ops, and their figures for sm_90a (registers, spills, traffic).
    """
    from evonorm_search.export import export_source, provenance_of, read_candidate

    graph, record = read_candidate(db_url, candidate_id)
    provenance = provenance_of(record)
    source = export_source(
        graph, class_name, provenance=provenance, kernels=kernels, compiled=record["compiled"]
    )
    try:
        output.write_text(source, encoding="utf-8")
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror}") from None
    what = f"class {class_name} with its Triton kernels" if kernels else f"class {class_name}"
    click.echo(f"wrote {output}: {what}, candidate {candidate_id} of search {provenance['search']}")


@cli.command()
@click.argument("name")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="report.html (figures inlined) or report.md (figures beside it).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Layers drawn and compared.",
)
@_db_option
def report(name: str, output: Path, top: int, db_url: str | None) -> None:
    """Write the report of the search NAME: settings, funnel, Pareto front, top layers."""
    from evonorm_search.report import write_report

    with _open_store(db_url) as store:
        write_report(store, name, output, top=top)
    click.echo(f"wrote {output}")


@cli.command()
@_db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback shows every search to the "
    "network (no authentication).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free one, printed).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    metavar="NAME",
    multiple=True,
    help="Also answer requests addressed to NAME (repeatable): a reverse proxy's "
    "public name, or this machine's names and addresses with --host 0.0.0.0 or ::; "
    "'*.example.com' allows its subdomains. Requests for any host but these, "
    "127.0.0.1, localhost and --host get 400 (against DNS rebinding).",
)
def dashboard(db_url: str | None, host: str, port: int, allow_hosts: tuple[str, ...]) -> None:
    """Serve a read-only web dashboard over the database: searches, live progress, the
    Pareto front, candidates (JSON under /api)."""
    from evonorm_search.dashboard import serve

    serve(db_url, host, port, allow_hosts=allow_hosts)


# -- running a search ----------------------------------------------------------------------


def _search_run(store: Any, settings: Any, *, resume: bool) -> None:
    """Run the driver under the live view; one line of outcome at the end."""
    from evonorm_search.search.display import LiveView
    from evonorm_search.search.driver import run_search

    with LiveView(settings.name) as view:
        status = run_search(store, settings, resume=resume, on_progress=view.update)
    summary = store.status(settings.name)
    reason = view.progress.stopped_reason if view.progress else None
    why = f" ({reason})" if status == "exhausted" and reason else ""
    click.echo(
        f"search {settings.name}: {status}{why}, {summary['trained']}/"
        f"{summary['budget']} trained, {summary['screened']} screened; see "
        f"`evonorm-search status {settings.name}` and `pareto {settings.name}`"
    )
    if status == "stopped":
        sys.exit(130)


def _writable_store(db_url: str | None) -> Any:
    from evonorm_search.store import Store

    return Store(db_url)


@cli.command()
@click.option("--name", required=True, help="A new search's name (no '/').")
@click.option(
    "--space", default="evonorm_b", show_default=True, help="A shipped space or a TOML file."
)
@click.option(
    "--data",
    "dataset",
    type=click.Choice(["digits", "cifar10", "synthetic"]),
    default="digits",
    show_default=True,
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where cifar-10-batches-py's files are (default: $EVONORM_DATA/...).",
)
@click.option(
    "--preset",
    type=click.Choice(["tiny", "paper"]),
    default=None,
    help="Proxy network size (default: the space's).",
)
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Candidates to train fully.",
)
@click.option(
    "--population",
    type=click.IntRange(min=2),
    default=None,
    help="Candidates sampled before a strategy learns: evolution's population "
    "(default: the space's), NSGA-II's generation (the space's), TPE's random "
    "start-up (10).",
)
@click.option(
    "--tournament",
    type=click.IntRange(min=1),
    default=None,
    help="Evolution's tournament size (default: the space's).",
)
@click.option(
    "--initial",
    type=click.Choice(["random", "baselines"]),
    default="random",
    show_default=True,
    help="The first proposals: random graphs, or the zoo's "
    "layers first (evolution and random); evolution then fills its population with "
    "mutants of trained ones and random graphs.",
)
@click.option(
    "--initial-mutants",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    metavar="SHARE",
    help="Share of mutants of trained candidates among the initial "
    "population's proposals once one is trained (default: the space's).",
)
@click.option(
    "--strategy",
    type=click.Choice(["evolution", "random", "tpe", "nsga2"]),
    default="evolution",
    show_default=True,
)
@click.option(
    "--objectives",
    default=None,
    metavar="LIST",
    help="Pareto objectives: architectures, mean, cost (default: per-architecture).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Concurrent trials."
)
@click.option("--cpus-per-trial", type=click.FloatRange(min=0.0), default=1.0, show_default=True)
@click.option("--gpus-per-trial", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option(
    "--max-candidates",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after screening this many (default: 100 x budget).",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop this sitting after this much wall time.",
)
@click.option(
    "--worker-hours",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="HOURS",
    help="Stop after this much worker time (wall time x workers), "
    "counted over every sitting and kept in the database.",
)
@click.option(
    "--compile-order",
    type=click.Choice(["auto", "first", "after-quality"]),
    default="auto",
    show_default=True,
    help="When a trial compiles the layer's kernels: first where training runs "
    "them (auto: on CUDA), after the quality check where it does not (auto: on a "
    "CPU).",
)
@click.option(
    "--signal-stage/--no-signal-stage",
    default=True,
    show_default=True,
    help="Reject layers without a learning signal after the first training steps "
    "(the space's [signal] thresholds).",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check each candidate's kernels in triton's interpreter before training.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--trial-retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Retries of a trial whose process died, before the candidate fails.",
)
@click.option(
    "--address",
    default=None,
    help="Join this Ray cluster (trusted networks only), e.g. 10.0.0.1:6379.",
)
@_db_option
def run(
    name: str,
    space: str,
    dataset: str,
    data_dir: str | None,
    preset: str | None,
    budget: int,
    population: int | None,
    tournament: int | None,
    initial: str,
    initial_mutants: float | None,
    strategy: str,
    objectives: str | None,
    workers: int,
    cpus_per_trial: float,
    gpus_per_trial: float,
    max_candidates: int | None,
    time_limit: float | None,
    worker_hours: float | None,
    compile_order: str,
    signal_stage: bool,
    verify: bool,
    seed: int,
    trial_retries: int,
    address: str | None,
    db_url: str | None,
) -> None:
    """Start a search: screen, compile and train candidates until BUDGET are trained."""
    from evonorm_search.search.driver import SearchSettings, check_data, settings_space
    from evonorm_search.store import check_search_name, validate_objectives

    check_search_name(name)
    chosen = tuple(o.strip() for o in objectives.split(",")) if objectives else None
    settings = SearchSettings(
        name=name,
        space=space,
        dataset=dataset,
        data_dir=data_dir,
        preset=preset,
        budget=budget,
        strategy=strategy,
        population=population,
        tournament=tournament,
        initial=initial,
        initial_mutants=initial_mutants,
        objectives=chosen,
        seed=seed,
        workers=workers,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_candidates=max_candidates,
        time_limit=time_limit,
        worker_hours=worker_hours,
        compile_order=compile_order,
        signal_stage=signal_stage,
        verify=verify,
        address=address,
        max_failures=trial_retries,
    )
    architectures = settings_space(settings).proxy.architectures
    if chosen:
        validate_objectives(chosen, architectures)
    check_data(dataset, data_dir)
    with _writable_store(db_url) as store:
        if any(s["name"] == name for s in store.searches()):
            raise click.ClickException(
                f"a search named {name!r} exists already: "
                f"`evonorm-search resume {name}` continues it"
            )
        _search_run(store, settings, resume=False)


@cli.command()
@click.argument("name")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Concurrent trials (default: as started).",
)
@click.option("--address", default=None, help="Join this Ray cluster instead.")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop this sitting after this much wall time.",
)
@click.option(
    "--worker-hours",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="HOURS",
    help="A new worker-time budget, over every sitting (default: as started).",
)
@click.option(
    "--max-candidates",
    type=click.IntRange(min=1),
    default=None,
    help="A new cap on candidates screened (an exhausted search needs a higher one).",
)
@_db_option
def resume(
    name: str,
    workers: int | None,
    address: str | None,
    time_limit: float | None,
    worker_hours: float | None,
    max_candidates: int | None,
    db_url: str | None,
) -> None:
    """Continue the search NAME to its budget from the database alone."""
    import dataclasses

    from evonorm_search.search.driver import SearchSettings

    with _writable_store(db_url) as store:
        search = store.search(name)
        if search["status"] == "completed":
            raise click.ClickException(f"search {name!r} is complete: its budget is trained")
        settings = SearchSettings.from_config(search["config"])
        given = {
            "workers": workers,
            "address": address,
            "time_limit": time_limit,
            "worker_hours": worker_hours,
            "max_candidates": max_candidates,
        }
        changes = {k: v for k, v in given.items() if v is not None}
        _search_run(store, dataclasses.replace(settings, **changes), resume=True)


# -- the baseline zoo on a search's protocol -----------------------------------------------


@baselines_command.command("evaluate")
def baselines_evaluate(
    space: str,
    dataset: str,
    data_dir: str | None,
    preset: str | None,
    seed: int,
    workers: int,
    verify: bool,
    db_url: str | None,
) -> None:
    """Train the zoo's layers of a space exactly as a search trains its candidates.

    The same funnel, compile stage and proxy training, in the search
    baselines-SPACE-DATA-PRESET-sSEED (strategy zoo); a layer the funnel or the quality
    check refuses is recorded with its fate. `pareto NAME --with-baselines` shows them
    beside the front of every search on the same protocol (dataset, preset, architectures
    and training: the FEC's proxy key). For a protocol evaluated already it says so in one
    line: exit 0 when that search is complete, 2 (and `resume NAME`) when it was stopped.
    """
    import dataclasses

    from evonorm_search.hashing import proxy_key
    from evonorm_search.search.driver import SearchSettings, check_data, settings_space
    from evonorm_search.search.strategies import Zoo, zoo_layers
    from evonorm_search.store import check_search_name

    settings = SearchSettings(
        name="baselines",
        space=space,
        dataset=dataset,
        data_dir=data_dir,
        preset=preset,
        strategy=Zoo.name,
        seed=seed,
        workers=workers,
        verify=verify,
    )
    loaded = settings_space(settings)
    layers = zoo_layers(loaded)
    if not layers:
        raise click.ClickException(f"no layer of the baseline zoo belongs to space {loaded.name!r}")
    name = check_search_name(
        f"baselines-{loaded.name}-{loaded.proxy.dataset}-{loaded.proxy.preset}-s{seed}"
    )
    # The budget when every layer trains; else the driver ends the search (`exhausted`)
    # once the zoo has nothing more to propose and no re-queued layer is left to train.
    settings = dataclasses.replace(settings, name=name, budget=len(layers))
    check_data(dataset, data_dir)
    with _writable_store(db_url) as store:
        if any(s["name"] == name for s in store.searches()):
            _evaluated_already(store.search(name), settings.strategy, proxy_key(loaded))
            return
        _search_run(store, settings, resume=False)


# `run`'s own options (the same objects): the same defaults make the same protocol.
baselines_evaluate.params += [
    p
    for p in run.params
    if p.name in ("space", "dataset", "data_dir", "preset", "seed", "workers", "verify", "db_url")
]


def _evaluated_already(search: dict[str, Any], strategy: str, key: str) -> None:
    """One line on the baseline search of this protocol that exists already."""
    name = search["name"]
    if search["strategy"] != strategy or search["proxy_key"] != key:
        raise click.ClickException(
            f"search {name!r} exists but holds no baselines of this "
            "protocol (the space file or the training protocol changed "
            "since): use another --db"
        )
    if search["status"] not in ("completed", "exhausted"):
        raise click.ClickException(
            f"the baselines of this protocol are search {name!r} "
            f"({search['status']}): `evonorm-search resume {name}` "
            "continues it"
        )
    click.echo(
        f"the baselines of this protocol are evaluated already: search {name} "
        f"({search['status']}); see `evonorm-search status {name}`, and `pareto "
        "SEARCH --with-baselines` for a search on this protocol"
    )


# -- final re-ranking ----------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    required=True,
    help="Candidates of the Pareto front retuned, best mean accuracy first.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Final runs with the chosen learning rate (seeds 1..S).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Training steps per run (default: twice the space's).",
)
@click.option(
    "--lr-trials",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Learning rates tried per layer (Optuna TPE).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Concurrent trials."
)
@click.option("--gpus-per-trial", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option("--address", default=None, help="Join this Ray cluster (trusted networks only).")
@_db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def retune(
    name: str,
    top: int,
    seeds: int,
    steps: int | None,
    lr_trials: int,
    workers: int,
    gpus_per_trial: float,
    address: str | None,
    db_url: str | None,
    fmt: str,
) -> None:
    """Re-rank the best layers of the search NAME with a tuned learning rate.

    The TOP candidates of its Pareto front and the zoo's layers trained on its protocol
    (`baselines evaluate`): per layer, LR_TRIALS learning rates in [lr/10, lr*10] around
    the space's, each trained for STEPS on seed 0 and scored by mean validation accuracy;
    then SEEDS runs at the best one, measured on the transfer-validation slice (never on
    the validation split that selected the layers). A layer retuned before with the same
    settings is not trained again; with other settings it is refused.
    """
    from evonorm_search.search.driver import check_data
    from evonorm_search.search.retune import plan_retune, run_retune

    with _open_store(db_url) as store:
        plan = plan_retune(store, name, top=top, seeds=seeds, steps=steps, lr_trials=lr_trials)
        search = store.search(name)
    if not plan.baselines:
        click.echo(
            f"evonorm-search: no baselines evaluated on the protocol of search {name}: "
            f"`{_evaluate_command(search, db_url)}` trains them",
            err=True,
        )
    for layer in plan.skipped:
        click.echo(
            f"{layer.label}: retuned already with these settings, not trained again", err=True
        )
    if plan.layers:
        check_data(plan.search.dataset, plan.search.data_dir)
        click.echo(
            f"retuning {len(plan.layers)} layers: {plan.settings['lr_trials']} learning "
            f"rates, then {seeds} seeds, {plan.settings['steps']} steps each",
            err=True,
        )
        with _writable_store(db_url) as store:
            unfinished = run_retune(
                store,
                plan,
                workers=workers,
                gpus_per_trial=gpus_per_trial,
                address=address,
                on_event=lambda line: click.echo(line, err=True),
            )
        if unfinished:
            _fail(
                f"interrupted: {', '.join(unfinished)} not retuned (the other layers are "
                "recorded; run the command again to train these)",
                code=130,
            )
    with _open_store(db_url) as store:
        results = store.retune_results(name)
    if fmt == "json":
        _print_json(results)
        return
    architectures = search["architectures"]

    def spread(mean: float | None, std: float | None) -> str:
        return _score(mean) + ("" if std is None else f" ± {std:.4f}")

    _print_table(
        f"search {name} re-ranked: mean over seeds ± sample std",
        ["layer", "lr", "split", "seeds", *architectures, "mean", "proxy mean", "formula"],
        [
            [
                r["layer"],
                f"{r['learning_rate']:.4g}",
                r["split"] or "-",
                str(len(r["seeds"])),
                *[spread(**r["scores"][a]) for a in architectures],
                spread(r["mean"], r["std"]),
                _score(r["proxy_mean"]),
                r["formula"] or "-",
            ]
            for r in results
        ],
    )


def _runner_options(function: Any) -> Any:
    """``--workers``, ``--gpus-per-trial`` and ``--address`` of the stages after a search."""
    for option in reversed(
        [
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=1,
                show_default=True,
                help="Concurrent runs.",
            ),
            click.option(
                "--gpus-per-trial", type=click.FloatRange(min=0.0), default=0.0, show_default=True
            ),
            click.option(
                "--address", default=None, help="Join this Ray cluster (trusted networks only)."
            ),
        ]
    ):
        function = option(function)
    return function


@cli.command()
@click.argument("name")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="The best distinct layers of the search by its own score.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="New seeds per layer (the search's seed + 1 .. + S).",
)
@_runner_options
@_db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def reevaluate(
    name: str,
    top: int,
    seeds: int,
    workers: int,
    gpus_per_trial: float,
    address: str | None,
    db_url: str | None,
    fmt: str,
) -> None:
    """Train the best layers of the search NAME again on its proxy with new seeds.

    A search scores each layer on one seed, so its top is where lucky seeds collect. The
    TOP best layers (one per function) are trained with SEEDS new seeds on the search's own
    protocol and ranked by the mean, with a 95% t-interval: `transfer` takes its layers from
    this ranking. A rerun trains only the (layer, seed) pairs that are missing.
    """
    from evonorm_search.search.driver import check_data
    from evonorm_search.search.reevaluate import (
        plan_reevaluation,
        reevaluation_ranking,
        run_reevaluation,
    )

    with _open_store(db_url) as store:
        plan = plan_reevaluation(store, name, top=top, seeds=seeds)
    if plan.units:
        check_data(plan.search.dataset, plan.search.data_dir)
        click.echo(
            f"re-evaluating {len(plan.layers)} layers: {len(plan.units)} runs "
            f"(seeds {plan.seeds[0]}..{plan.seeds[-1]})",
            err=True,
        )
        with _writable_store(db_url) as store:
            left = run_reevaluation(
                store,
                plan,
                workers=workers,
                gpus_per_trial=gpus_per_trial,
                address=address,
                on_event=lambda line: click.echo(line, err=True),
            )
        if left:
            _fail(
                f"{left} runs not recorded (the others are); run the command again to train them",
                code=130,
            )
    with _open_store(db_url) as store:
        ranking = reevaluation_ranking(store, name, top=top, seeds=plan.seeds)
    if fmt == "json":
        _print_json(ranking)
        return
    _print_table(
        f"search {name} re-evaluated: mean over new seeds [95% t-interval]",
        ["rank", "id", "re-evaluated mean", "seeds", "search's score", "formula"],
        [
            [
                str(k),
                f"#{r['id']}",
                interval_text(
                    {"mean": r["mean"], "low": r["low"], "high": r["high"], "n": len(r["seeds"])}
                ),
                ",".join(map(str, r["seeds"])),
                _score(r["proxy_mean"]),
                r["formula"] or "-",
            ]
            for k, r in enumerate(ranking, start=1)
        ],
    )


@cli.command()
@click.argument("name")
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="The best re-evaluated layers of the search (see `reevaluate`).",
)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    metavar="LAYER",
    help="Also transfer a zoo layer, a candidate id or a formula (repeatable).",
)
@click.option(
    "--zoo",
    "zoo_layers",
    default=None,
    metavar="A,B|none",
    help="The zoo's reference layers (default: every one trained on the search's protocol).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=None,
    help="Seeds 1..S per layer and network (default: the space's [transfer]).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Training steps per run (default: the space's [transfer]).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images (or sequences) per step (default: the space's [transfer]).",
)
@click.option(
    "--networks",
    default=None,
    metavar="A,B",
    help="Transfer networks (default: the space's [transfer]).",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="The rate without a sweep (default: the space's [transfer]).",
)
@click.option(
    "--learning-rates",
    default=None,
    metavar="R1,R2,..",
    help="A sweep per layer at seed 0, chosen on transfer-validation (default: the space's "
    "[transfer]; none: no sweep, every layer at --learning-rate).",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=None,
    help="Steps between the learning curve's points.",
)
@click.option(
    "--checkpoint-minutes",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Minutes between a run's checkpoints (default: 3).",
)
@click.option(
    "--comparator",
    default=None,
    metavar="LABEL",
    help="The layer every other is compared with (default: the zoo layer with the "
    "best mean transfer-validation accuracy).",
)
@_runner_options
@_db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def transfer(
    name: str,
    top: int,
    layers: tuple[str, ...],
    zoo_layers: str | None,
    seeds: int | None,
    steps: int | None,
    batch_size: int | None,
    networks: str | None,
    learning_rate: float | None,
    learning_rates: str | None,
    eval_every: int | None,
    checkpoint_minutes: float | None,
    comparator: str | None,
    workers: int,
    gpus_per_trial: float,
    address: str | None,
    db_url: str | None,
    fmt: str,
) -> None:
    """Train layers of the search NAME from scratch on bigger networks, over shared seeds.

    The TOP best re-evaluated layers, the zoo's layers trained on its protocol (or those
    of --zoo) and every --layer are trained on the space's [transfer] networks (ResNet-20
    at full resolution for images) with seeds 1..S, scored on transfer-validation (and on
    transfer-test for the final table), slices of the training data that no training
    reads. Each finished run is stored at once, a run's state every few minutes: a rerun
    continues. Other settings than the search's or a layer's earlier transfer are refused.
    It prints the search's transfer as stored (every layer transferred for it so far), as
    the dashboard shows it.
    """
    from evonorm_search.search.driver import check_data
    from evonorm_search.search.transfer import plan_transfer, run_transfer, stored_transfer

    def names(text: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in text.split(",") if n.strip())

    def numbers(text: str | None, what: str) -> tuple[float, ...] | None:
        if text is None:
            return None
        if text.strip().lower() == "none":
            return ()
        try:
            values = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is not a comma-separated list of numbers", param_hint=what
            ) from None
        if not values or min(values) <= 0:
            raise click.BadParameter("rates must be > 0", param_hint=what)
        return values

    overrides = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "eval_every": eval_every,
        "learning_rates": numbers(learning_rates, "--learning-rates"),
        "networks": None if networks is None else names(networks),
    }
    with _open_store(db_url) as store:
        zoo = None if zoo_layers is None else tuple(n for n in names(zoo_layers) if n != "none")
        plan = plan_transfer(
            store,
            name,
            top=top,
            layers=layers,
            zoo_layers=zoo,
            seeds=seeds,
            comparator=comparator,
            checkpoint_minutes=checkpoint_minutes,
            **overrides,
        )
        search = store.search(name)
    if not plan.baselines:
        click.echo(
            f"evonorm-search: no baselines evaluated on the protocol of search {name}: "
            f"`{_evaluate_command(search, db_url)}` trains them (the zoo is the "
            "comparator)",
            err=True,
        )
    with _writable_store(db_url) as store:
        check_data(plan.search.dataset, plan.search.data_dir)
        s = plan.settings
        click.echo(
            f"transfer of {len(plan.layers)} layers to {', '.join(s['networks'])}: "
            f"{s['steps']} steps, seeds 1..{len(plan.seeds)}"
            + (
                f", a sweep of {len(s['learning_rates'])} rates"
                if s["learning_rates"]
                else f", lr {s['learning_rate']:g}"
            ),
            err=True,
        )
        left = run_transfer(
            store,
            plan,
            workers=workers,
            gpus_per_trial=gpus_per_trial,
            address=address,
            on_event=lambda line: click.echo(line, err=True),
        )
        results = stored_transfer(store, name)  # the search's transfer: the dashboard's too
    if fmt == "json":
        _print_json(results)
    else:
        _print_transfer(results)
    if left:
        _fail(
            f"{left} runs not recorded (the others are); run the command again to train "
            "them, each from its checkpoint",
            code=130,
        )


def _print_transfer(results: dict[str, Any]) -> None:
    from evonorm_search.search.transfer import comparison_table, transfer_table

    for network, comparison in results["comparisons"].items():
        header, rows = transfer_table(results, network)
        _print_table(
            f"search {results['search']} transferred to {network}: accuracy, mean "
            "[95% t-interval] over seeds",
            header,
            rows,
        )
        if comparison["comparator"] is None:
            click.echo(f"no comparison on {network}: {comparison['rule']}")
            continue
        statement, header, rows = comparison_table(comparison)
        click.echo(f"comparison fixed in advance on {network}: {statement}")
        if rows:
            _print_table(None, header, rows)


@cli.group()
def db() -> None:
    """Manage the results database."""


@db.command()
@_db_option
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


def main() -> None:
    cli.main(prog_name="evonorm-search")


if __name__ == "__main__":
    main()

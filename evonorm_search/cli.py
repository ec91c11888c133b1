"""The ``evonorm-search`` command line.

Every error a user can cause (bad formula or graph JSON, unknown space or baseline, bad
option) ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from evonorm_search import __version__, baselines
from evonorm_search.errors import EvoNormError

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
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


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


@cli.command("baselines")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def baselines_command(fmt: str) -> None:
    """List the baseline zoo: known layers as formulas."""
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


def main() -> None:
    cli.main(prog_name="evonorm-search")


if __name__ == "__main__":
    main()

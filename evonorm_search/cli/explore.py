"""What the package ships and how it reads a layer: ``spaces``, ``baselines`` and
``formula``."""

from __future__ import annotations

import click

from evonorm_search import baselines
from evonorm_search.cli import options, runs
from evonorm_search.cli.render import print_json, print_table


@click.command()
@options.output_format()
def spaces(fmt: str) -> None:
    """List the shipped search spaces."""
    from evonorm_search.space import list_spaces, load_space

    loaded = [load_space(name) for name in list_spaces()]
    if fmt == "json":
        print_json(
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
    print_table(
        "search spaces",
        ["name", "tensor", "axes", "max nodes", "description"],
        [
            [s.name, s.tensor, ", ".join(s.graph.axes), str(s.graph.max_nodes), s.description]
            for s in loaded
        ],
    )


@click.group("baselines", invoke_without_command=True)
@options.output_format()
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
        print_json(
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
    print_table(
        "baseline layers",
        ["name", "tensor", "formula", "description"],
        [[b.name, b.tensor, b.formula, b.description] for b in zoo],
    )


baselines_command.add_command(runs.baselines_evaluate)


# ignore_unknown_options: a formula may start with "-" ("-x / std_group(x)").
@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("expr")
@click.option(
    "--space",
    "space_names",
    multiple=True,
    metavar="NAME",
    help="Check the graph against these search spaces (default: every shipped one).",
)
@options.output_format()
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
        print_json(info)
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
    print_table(None, ["", "value"], rows)

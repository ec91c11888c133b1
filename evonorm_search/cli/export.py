"""``export``: a candidate as a standalone PyTorch module."""

from __future__ import annotations

from pathlib import Path

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import LibraryDefault


def _class_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from evonorm_search.export import check_class_name

    try:
        return check_class_name(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


@click.command("export")
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
    type=str,
    default=LibraryDefault("evonorm_search.export:export_source", "class_name"),
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
@options.db
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

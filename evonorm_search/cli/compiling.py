"""``compile``: a layer's fused Triton kernels, compiled ahead of time for a GPU target, and
their figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import COUNT, DTYPES, LibraryDefault, open_store
from evonorm_search.cli.render import note, print_json, print_table, say
from evonorm_search.errors import GraphError, SpaceError

if TYPE_CHECKING:
    from evonorm_search.codegen.compiler import CompiledLayer
    from evonorm_search.graph import LayerGraph
    from evonorm_search.space import CompileTarget


def _compile_subject(subject: str, db_url: str | None) -> tuple[LayerGraph, CompileTarget]:
    """The graph a ``compile`` argument names (a formula, graph JSON or a candidate id) and
    the default target, shape and dtype: the candidate's search space's, where it has one."""
    from evonorm_search.graph import as_graph

    if not subject.isdigit():
        return as_graph(subject).validate(), options.COMPILE
    from evonorm_search.space import load_space

    with open_store(db_url) as store:
        record = store.candidate(int(subject))
        space_name = store.search(record["search"])["space"]
    try:
        graph = as_graph(record["graph"]).validate()
    except GraphError as e:
        raise GraphError(f"candidate {subject} is not a valid layer: {e}") from None
    try:
        return graph, load_space(space_name).compile
    except SpaceError as e:
        note(f"warning: {e}; compiling at the default target, shape and dtype")
        return graph, options.COMPILE


# ignore_unknown_options: a formula may start with "-" ("-x / std_group(x)").
@click.command("compile", context_settings={"ignore_unknown_options": True})
@click.argument("subject", metavar="EXPR|ID")
@options.db
@options.compile_target
@click.option(
    "--groups",
    type=COUNT,
    default=LibraryDefault("evonorm_search.codegen.compiler:compile_layer", "groups"),
    show_default=True,
    help="Groups of group statistics (the largest divisor of C not above it).",
)
@options.verify
@options.output_format()
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
    graph, defaults = _compile_subject(subject, db_url)
    if importlib.util.find_spec("triton") is None:
        raise click.ClickException(
            "triton is not installed: the compiler needs it (pip install triton, on Linux)"
        )
    # The compiler loads only once triton is known to be installed.
    import torch

    from evonorm_search.codegen.aot import TARGETS, has_cuda_backend
    from evonorm_search.codegen.compiler import compile_layer
    from evonorm_search.codegen.runtime import write_source
    from evonorm_search.codegen.source import generate, unsupported

    target = target or defaults.target
    if target not in TARGETS:  # checked here, not by click: a search space may name any sm_XY
        raise click.BadParameter(
            f"{target!r} is not a target of the compiler (choose from {', '.join(TARGETS)})",
            param_hint="'--target'",
        )
    shape = shape or tuple(defaults.reference_shape)
    dtype_name = DTYPES[dtype] if dtype else defaults.dtype
    aot = has_cuda_backend()
    if not aot:
        note(
            f"warning: the installed triton has no CUDA backend: no kernels compiled for "
            f"{target}, traffic model only"
        )
    if source_dir is not None and unsupported(graph) is None:
        try:
            path = write_source(generate(graph), source_dir)
        except OSError as e:
            raise click.ClickException(f"cannot write into {source_dir}: {e.strerror}") from None
        say(f"wrote {path}")
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
        print_json(result.to_dict())
        return
    _print_compiled(result)


def _print_compiled(r: CompiledLayer) -> None:
    if r.kernels:
        print_table(
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

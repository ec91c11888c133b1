"""The options that several commands share, each stated once, and how commands open the
results database.

Defaults and choices are read from where the library states them: a search's settings
(``SearchSettings``: ``run``, ``resume``, ``baselines evaluate`` and the stages after a
search), the spaces' datasets, presets and dtypes, the strategy registry, the compile
orders, the compile target of a space that names none (``CompileTarget``) and the
compiler's GPU targets.  Importing these loads none of the heavy dependencies.  A
default that only a library function's signature states is read from that signature
when a command first needs it (``LibraryDefault``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

import click

from evonorm_search.catalog import DATASETS, PRESETS
from evonorm_search.codegen.aot import TARGETS
from evonorm_search.search.driver import SearchSettings
from evonorm_search.search.strategies import INITIAL_POPULATIONS, STRATEGIES
from evonorm_search.search.trial import COMPILE_ORDERS
from evonorm_search.space import DTYPES as SPACE_DTYPES
from evonorm_search.space import CompileTarget

Decorator = Callable[[Any], Any]

# A search's settings as the driver defaults them.
SEARCH: dict[str, Any] = {
    f.name: f.default for f in fields(SearchSettings) if f.default is not MISSING
}
# The compile target, reference shape and dtype where no search space names them.
COMPILE = CompileTarget()
# The spaces' dtype names, and float64 (a gradcheck dtype spaces do not offer).
DTYPES = {**SPACE_DTYPES, "fp64": "float64", "float64": "float64"}
# How a command prints its result; the first is the default.
FORMATS = ("table", "json")
POSITIVE = click.FloatRange(min=0.0, min_open=True)
COUNT = click.IntRange(min=1)


def stack(*decorators: Decorator) -> Decorator:
    """The decorators as one; their options appear in --help in the order given."""

    def apply(function: Any) -> Any:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


class LibraryDefault:
    """The default that the library function ``function`` (``module:name``) gives its
    ``parameter``, read when a command first needs it (its --help, or its run), so that
    loading the CLI imports nothing more for it."""

    def __init__(self, function: str, parameter: str) -> None:
        self.function, self.parameter = function, parameter

    def __call__(self) -> Any:
        module, name = self.function.split(":")
        signature = inspect.signature(getattr(importlib.import_module(module), name))
        return signature.parameters[self.parameter].default

    def __str__(self) -> str:  # what --help shows
        return str(self())

    def __repr__(self) -> str:
        return f"LibraryDefault({self.function!r}, {self.parameter!r})"


def setting(field: str, *decls: str, **attrs: Any) -> Decorator:
    """An option for the search setting ``field`` (its parameter's name), with the
    driver's default."""
    default = SEARCH[field]
    return click.option(*decls, field, default=default, show_default=default is not None, **attrs)


def _resumable(
    field: str, *decls: str, help: str, resumed: str, **attrs: Any
) -> Callable[..., Decorator]:
    """A setting that ``resume`` may change: with ``as_started`` its default is None (the
    search's own setting stays) and its help ``resumed``."""

    def option(*, as_started: bool = False) -> Decorator:
        if as_started:
            return click.option(*decls, field, default=None, help=resumed, **attrs)
        return setting(field, *decls, help=help, **attrs)

    return option


# -- the results database and what commands print -------------------------------------

db = click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="Results database (default: $EVONORM_DB, else sqlite:///evonorm.db).",
)


def output_format(*more: str) -> Decorator:
    """``--format``: a table, JSON, and ``more`` formats."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice([*FORMATS, *more]),
        default=FORMATS[0],
        show_default=True,
        help="How the result is printed.",
    )


def open_store(db_url: str | None) -> Any:
    """A read-only store: queries never create, migrate or write a database."""
    from evonorm_search.store import Store

    return Store(db_url, readonly=True)


def writable_store(db_url: str | None) -> Any:
    from evonorm_search.store import Store

    return Store(db_url)


# -- a search's protocol: what a search and the zoo's evaluation train on ----------------

space = setting("space", "--space", help="A shipped space or a TOML file.")
data = setting(
    "dataset",
    "--data",
    type=click.Choice(DATASETS),
    help="The proxy networks' dataset.",
)
data_dir = setting(
    "data_dir",
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where cifar-10-batches-py's files are (default: $EVONORM_DATA/...).",
)
preset = setting(
    "preset",
    "--preset",
    type=click.Choice(PRESETS),
    help="Proxy network size (default: the space's).",
)
protocol = stack(space, data, data_dir, preset)
seed = setting("seed", "--seed", type=int, help="Seed of the proposals and of the training.")
verify = setting(
    "verify",
    "--verify/--no-verify",
    help="Check the kernels against the eager layer in triton's interpreter (in a search: "
    "before training).",
)

# -- how a search proposes --------------------------------------------------------------

strategy = setting(
    "strategy",
    "--strategy",
    type=click.Choice(list(STRATEGIES)),
    help="How the search proposes candidates.",
)
initial = setting(
    "initial",
    "--initial",
    type=click.Choice(INITIAL_POPULATIONS),
    help="The first proposals: random graphs, or the zoo's layers first (evolution and "
    "random); evolution then fills its population with mutants of trained ones and "
    "random graphs.",
)
compile_order = setting(
    "compile_order",
    "--compile-order",
    type=click.Choice(COMPILE_ORDERS),
    help="When a trial compiles the layer's kernels: first where training runs them "
    "(auto: on CUDA), after the quality check where it does not (auto: on a CPU).",
)

# -- where trials run, and when a sitting stops -----------------------------------------

workers = _resumable(
    "workers",
    "--workers",
    type=COUNT,
    help="Concurrent trials.",
    resumed="Concurrent trials (default: as started).",
)
gpus_per_trial = setting(
    "gpus_per_trial",
    "--gpus-per-trial",
    type=click.FloatRange(min=0.0),
    help="GPUs reserved per trial (a fraction shares one).",
)
address = _resumable(
    "address",
    "--address",
    help="Join this Ray cluster (trusted networks only), e.g. 10.0.0.1:6379.",
    resumed="Join this Ray cluster instead.",
)
# The stages after a search: retune, reevaluate, transfer.
runners = stack(workers(), gpus_per_trial, address())
time_limit = setting(
    "time_limit",
    "--time-limit",
    type=POSITIVE,
    metavar="SECONDS",
    help="Stop this sitting after this much wall time.",
)
worker_hours = _resumable(
    "worker_hours",
    "--worker-hours",
    type=POSITIVE,
    metavar="HOURS",
    help="Stop after this much worker time (wall time x workers), counted over every "
    "sitting and kept in the database.",
    resumed="A new worker-time budget, over every sitting (default: as started).",
)
max_candidates = _resumable(
    "max_candidates",
    "--max-candidates",
    type=COUNT,
    help="Stop after screening this many (default: 100 x budget).",
    resumed="A new cap on candidates screened (an exhausted search needs a higher one).",
)

# -- compiling: where no search space names the target, shape and dtype -----------------


class Shape(click.ParamType):
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
                "expected 2 to 5 comma-separated positive sizes such as "
                f"{','.join(map(str, COMPILE.reference_shape))}, got {value!r}",
                param,
                ctx,
            )
        return dims


compile_target = stack(
    click.option(
        "--target",
        default=None,
        help=f"GPU target: {', '.join(TARGETS)} (default: the candidate's space's, else "
        f"{COMPILE.target}).",
    ),
    click.option(
        "--shape",
        type=Shape(),
        default=None,
        help="Reference input shape (default: the space's, else "
        f"{','.join(map(str, COMPILE.reference_shape))}).",
    ),
    click.option(
        "--dtype",
        type=click.Choice(list(DTYPES)),
        default=None,
        help=f"Input dtype (default: the space's, else {COMPILE.dtype}).",
    ),
)

"""Running a search: ``run``, ``resume``, and ``baselines evaluate`` (the zoo's layers
trained on a search's protocol)."""

from __future__ import annotations

import sys
from typing import Any

import click

from evonorm_search.cli.options import db_option, writable_store
from evonorm_search.cli.render import note


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


@click.command()
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
@db_option
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
    with writable_store(db_url) as store:
        if any(s["name"] == name for s in store.searches()):
            raise click.ClickException(
                f"a search named {name!r} exists already: "
                f"`evonorm-search resume {name}` continues it"
            )
        _search_run(store, settings, resume=False)


@click.command()
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
@db_option
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

    with writable_store(db_url) as store:
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


@click.command("evaluate")
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
    with writable_store(db_url) as store:
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


def evaluate_command(search: dict[str, Any], db_url: str | None) -> str:
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


def note_no_baselines(search: dict[str, Any], db_url: str | None, why: str = "") -> None:
    """The line that says no zoo layer was trained on the protocol of ``search``, and the
    command that trains them."""
    note(
        f"no baselines evaluated on the protocol of search {search['name']}: "
        f"`{evaluate_command(search, db_url)}` trains them{why}"
    )

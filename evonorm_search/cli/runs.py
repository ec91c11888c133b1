"""Running a search: ``run``, ``resume``, and ``baselines evaluate`` (the zoo's layers
trained on a search's protocol)."""

from __future__ import annotations

import sys
from typing import Any

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import COUNT, setting, writable_store
from evonorm_search.cli.render import PROGRAM, note


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
@options.protocol
@setting("budget", "--budget", type=COUNT, help="Candidates to train fully.")
@setting(
    "population",
    "--population",
    type=click.IntRange(min=2),
    help="Candidates sampled before a strategy learns: evolution's population "
    "(default: the space's), NSGA-II's generation (the space's), TPE's random "
    "start-up (10).",
)
@setting(
    "tournament",
    "--tournament",
    type=COUNT,
    help="Evolution's tournament size (default: the space's).",
)
@options.initial
@setting(
    "initial_mutants",
    "--initial-mutants",
    type=click.FloatRange(0.0, 1.0),
    metavar="SHARE",
    help="Share of mutants of trained candidates among the initial "
    "population's proposals once one is trained (default: the space's).",
)
@options.strategy
@setting(
    "objectives",
    "--objectives",
    metavar="LIST",
    help="Pareto objectives: architectures, mean, cost (default: per-architecture).",
)
@options.workers()
@setting(
    "cpus_per_trial",
    "--cpus-per-trial",
    type=click.FloatRange(min=0.0),
    help="CPUs reserved per trial.",
)
@options.gpus_per_trial
@options.max_candidates()
@options.time_limit
@options.worker_hours()
@options.compile_order
@setting(
    "signal_stage",
    "--signal-stage/--no-signal-stage",
    help="Reject layers without a learning signal after the first training steps "
    "(the space's [signal] thresholds).",
)
@options.verify
@options.seed
@setting(
    "max_failures",
    "--trial-retries",
    type=click.IntRange(min=0),
    help="Retries of a trial whose process died, before the candidate fails.",
)
@options.address()
@options.db
def run(objectives: str | None, db_url: str | None, **given: Any) -> None:
    """Start a search: screen, compile and train candidates until BUDGET are trained."""
    from evonorm_search.search.driver import SearchSettings, check_data, settings_space
    from evonorm_search.store import check_search_name, validate_objectives

    name = check_search_name(given["name"])
    chosen = tuple(o.strip() for o in objectives.split(",")) if objectives else None
    settings = SearchSettings(objectives=chosen, **given)
    architectures = settings_space(settings).proxy.architectures
    if chosen:
        validate_objectives(chosen, architectures)
    check_data(settings.dataset, settings.data_dir)
    with writable_store(db_url) as store:
        if any(s["name"] == name for s in store.searches()):
            raise click.ClickException(
                f"a search named {name!r} exists already: "
                f"`evonorm-search resume {name}` continues it"
            )
        _search_run(store, settings, resume=False)


@click.command()
@click.argument("name")
@options.workers(as_started=True)
@options.address(as_started=True)
@options.time_limit
@options.worker_hours(as_started=True)
@options.max_candidates(as_started=True)
@options.db
def resume(name: str, db_url: str | None, **given: Any) -> None:
    """Continue the search NAME to its budget from the database alone."""
    import dataclasses

    from evonorm_search.search.driver import SearchSettings

    with writable_store(db_url) as store:
        search = store.search(name)
        if search["status"] == "completed":
            raise click.ClickException(f"search {name!r} is complete: its budget is trained")
        settings = SearchSettings.from_config(search["config"])
        changes = {k: v for k, v in given.items() if v is not None}
        _search_run(store, dataclasses.replace(settings, **changes), resume=True)


# -- the baseline zoo on a search's protocol -----------------------------------------------


@click.command("evaluate")
@options.protocol
@options.workers()
@options.verify
@options.seed
@options.db
def baselines_evaluate(db_url: str | None, **protocol: Any) -> None:
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

    settings = SearchSettings(name="baselines", strategy=Zoo.name, **protocol)
    loaded = settings_space(settings)
    layers = zoo_layers(loaded)
    if not layers:
        raise click.ClickException(f"no layer of the baseline zoo belongs to space {loaded.name!r}")
    name = check_search_name(
        f"baselines-{loaded.name}-{loaded.proxy.dataset}-{loaded.proxy.preset}-s{settings.seed}"
    )
    # The budget when every layer trains; else the driver ends the search (`exhausted`)
    # once the zoo has nothing more to propose and no re-queued layer is left to train.
    settings = dataclasses.replace(settings, name=name, budget=len(layers))
    check_data(settings.dataset, settings.data_dir)
    with writable_store(db_url) as store:
        if any(s["name"] == name for s in store.searches()):
            _evaluated_already(store.search(name), settings.strategy, proxy_key(loaded))
            return
        _search_run(store, settings, resume=False)


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
    words = [PROGRAM, "baselines", "evaluate", "--space", search["space"]]
    for param in baselines_evaluate.params:  # the protocol's options that are not the default
        shown = param.name in ("dataset", "data_dir", "preset", "seed")
        if shown and config.get(param.name, param.default) != param.default:
            words += [param.opts[0], str(config[param.name])]
    return shlex.join(words + (["--db", mask(db_url)] if db_url else []))


def note_no_baselines(search: dict[str, Any], db_url: str | None, why: str = "") -> None:
    """The line that says no zoo layer was trained on the protocol of ``search``, and the
    command that trains them."""
    note(
        f"no baselines evaluated on the protocol of search {search['name']}: "
        f"`{evaluate_command(search, db_url)}` trains them{why}"
    )

"""``transfer``: a search's layers trained from scratch on bigger networks over shared
seeds, and compared with a comparator fixed in advance."""

from __future__ import annotations

from typing import Any

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import COUNT, POSITIVE, LibraryDefault, open_store, writable_store
from evonorm_search.cli.render import fail, print_json, print_table, say
from evonorm_search.cli.runs import note_no_baselines


def _transfer_setting(*decls: str, help: str, **attrs: Any) -> Any:
    """An option whose default is the space's [transfer] setting."""
    return click.option(
        *decls, default=None, help=f"{help} (default: the space's [transfer]).", **attrs
    )


@click.command()
@click.argument("name")
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=LibraryDefault("evonorm_search.search.transfer:plan_transfer", "top"),
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
@_transfer_setting("--seeds", type=COUNT, help="Seeds 1..S per layer and network")
@_transfer_setting("--steps", type=COUNT, help="Training steps per run")
@_transfer_setting("--batch-size", type=COUNT, help="Images (or sequences) per step")
@_transfer_setting("--networks", metavar="A,B", help="Transfer networks")
@_transfer_setting("--learning-rate", type=POSITIVE, help="The rate without a sweep")
@click.option(
    "--learning-rates",
    default=None,
    metavar="R1,R2,..",
    help="A sweep per layer at seed 0, chosen on transfer-validation (default: the space's "
    "[transfer]; none: no sweep, every layer at --learning-rate).",
)
@_transfer_setting("--eval-every", type=COUNT, help="Steps between the learning curve's points")
@_transfer_setting(
    "--checkpoint-minutes", type=POSITIVE, help="Minutes between a run's checkpoints"
)
@click.option(
    "--comparator",
    default=None,
    metavar="LABEL",
    help="The layer every other is compared with (default: the zoo layer with the "
    "best mean transfer-validation accuracy).",
)
@options.runners
@options.db
@options.output_format()
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
    db_url: str | None,
    fmt: str,
    **runner: Any,
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
    with open_store(db_url) as store:
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
        note_no_baselines(search, db_url, " (the zoo is the comparator)")
    with writable_store(db_url) as store:
        check_data(plan.search.dataset, plan.search.data_dir)
        s = plan.settings
        say(
            f"transfer of {len(plan.layers)} layers to {', '.join(s['networks'])}: "
            f"{s['steps']} steps, seeds 1..{len(plan.seeds)}"
            + (
                f", a sweep of {len(s['learning_rates'])} rates"
                if s["learning_rates"]
                else f", lr {s['learning_rate']:g}"
            )
        )
        left = run_transfer(store, plan, **runner, on_event=say)
        results = stored_transfer(store, name)  # the search's transfer: the dashboard's too
    if fmt == "json":
        print_json(results)
    else:
        print_transfer(results)
    if left:
        fail(
            f"{left} runs not recorded (the others are); run the command again to train "
            "them, each from its checkpoint",
            code=130,
        )


def print_transfer(results: dict[str, Any]) -> None:
    from evonorm_search.search.transfer import comparison_table, transfer_table

    for network, comparison in results["comparisons"].items():
        header, rows = transfer_table(results, network)
        print_table(
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
            print_table(None, header, rows)

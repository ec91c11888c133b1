"""Re-ranking a search's best layers: ``retune`` (a tuned learning rate, then new seeds)
and ``reevaluate`` (the search's own protocol, new seeds)."""

from __future__ import annotations

from typing import Any

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import COUNT, LibraryDefault, open_store, writable_store
from evonorm_search.cli.render import fail, print_json, print_table, say, score
from evonorm_search.cli.runs import note_no_baselines
from evonorm_search.stats import interval_text

PLAN_RETUNE = "evonorm_search.search.retune:plan_retune"


@click.command()
@click.argument("name")
@click.option(
    "--top",
    type=COUNT,
    required=True,
    help="Candidates of the Pareto front retuned, best mean accuracy first.",
)
@click.option(
    "--seeds",
    type=COUNT,
    default=LibraryDefault(PLAN_RETUNE, "seeds"),
    show_default=True,
    help="Final runs with the chosen learning rate (seeds 1..S).",
)
@click.option(
    "--steps",
    type=COUNT,
    default=None,
    help="Training steps per run (default: twice the space's).",
)
@click.option(
    "--lr-trials",
    type=COUNT,
    default=LibraryDefault(PLAN_RETUNE, "lr_trials"),
    show_default=True,
    help="Learning rates tried per layer (Optuna TPE).",
)
@options.runners
@options.db
@options.output_format()
def retune(
    name: str,
    top: int,
    seeds: int,
    steps: int | None,
    lr_trials: int,
    db_url: str | None,
    fmt: str,
    **runner: Any,
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

    with open_store(db_url) as store:
        plan = plan_retune(store, name, top=top, seeds=seeds, steps=steps, lr_trials=lr_trials)
        search = store.search(name)
    if not plan.baselines:
        note_no_baselines(search, db_url)
    for layer in plan.skipped:
        say(f"{layer.label}: retuned already with these settings, not trained again")
    if plan.layers:
        check_data(plan.search.dataset, plan.search.data_dir)
        say(
            f"retuning {len(plan.layers)} layers: {plan.settings['lr_trials']} learning "
            f"rates, then {seeds} seeds, {plan.settings['steps']} steps each"
        )
        with writable_store(db_url) as store:
            unfinished = run_retune(store, plan, **runner, on_event=say)
        if unfinished:
            fail(
                f"interrupted: {', '.join(unfinished)} not retuned (the other layers are "
                "recorded; run the command again to train these)",
                code=130,
            )
    with open_store(db_url) as store:
        results = store.retune_results(name)
    if fmt == "json":
        print_json(results)
        return
    architectures = search["architectures"]

    def spread(mean: float | None, std: float | None) -> str:
        return score(mean) + ("" if std is None else f" ± {std:.4f}")

    print_table(
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
                score(r["proxy_mean"]),
                r["formula"] or "-",
            ]
            for r in results
        ],
    )


@click.command()
@click.argument("name")
@click.option(
    "--top",
    type=COUNT,
    default=8,
    show_default=True,
    help="The best distinct layers of the search by its own score.",
)
@click.option(
    "--seeds",
    type=COUNT,
    default=3,
    show_default=True,
    help="New seeds per layer (the search's seed + 1 .. + S).",
)
@options.runners
@options.db
@options.output_format()
def reevaluate(
    name: str,
    top: int,
    seeds: int,
    db_url: str | None,
    fmt: str,
    **runner: Any,
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

    with open_store(db_url) as store:
        plan = plan_reevaluation(store, name, top=top, seeds=seeds)
    if plan.units:
        check_data(plan.search.dataset, plan.search.data_dir)
        say(
            f"re-evaluating {len(plan.layers)} layers: {len(plan.units)} runs "
            f"(seeds {plan.seeds[0]}..{plan.seeds[-1]})"
        )
        with writable_store(db_url) as store:
            left = run_reevaluation(store, plan, **runner, on_event=say)
        if left:
            fail(
                f"{left} runs not recorded (the others are); run the command again to train them",
                code=130,
            )
    with open_store(db_url) as store:
        ranking = reevaluation_ranking(store, name, top=top, seeds=plan.seeds)
    if fmt == "json":
        print_json(ranking)
        return
    print_table(
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
                score(r["proxy_mean"]),
                r["formula"] or "-",
            ]
            for k, r in enumerate(ranking, start=1)
        ],
    )

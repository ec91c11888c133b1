"""A transfer's results: per network the figures with intervals, the comparison fixed in
advance, and the same as tables (the CLI and the report print them)."""

from __future__ import annotations

from typing import Any

from evonorm_search.search.driver import SearchSettings, settings_space
from evonorm_search.search.transfer.plan import STAGE, TRANSFER_KEY, TransferLayer, TransferPlan
from evonorm_search.search.transfer.run import chosen_rate, stored_runs
from evonorm_search.stats import compare_paired, mean_interval


def transfer_results(store: Any, plan: TransferPlan, *, alpha: float = 0.05) -> dict[str, Any]:
    """The plan's stored runs as a report: per layer and network the seeds' figures, the
    mean and 95% t-interval on transfer-validation, transfer-test and test, the learning
    curves; per network the comparator (``--comparator``, else the zoo layer with the best
    mean transfer-validation accuracy, fixed before transfer-test is read) and each other
    layer's paired difference to it on transfer-test, Holm-corrected over that network's
    comparisons."""
    key = plan.key_comparable
    layers = []
    for layer in plan.layers:
        record = store.candidate(layer.candidate)
        done = stored_runs(store, layer.candidate, key)
        per_network = {}
        for network in plan.settings["networks"]:
            rate = chosen_rate(plan.settings, done, network)
            runs = {seed: done.get(("final", network, seed, rate)) for seed in plan.seeds}
            runs = {seed: e for seed, e in runs.items() if e is not None}
            per_network[network] = _network_figures(runs, rate)
        layers.append(
            {
                "label": layer.label,
                "kind": layer.kind,
                "id": layer.candidate,
                "formula": record["formula"],
                "networks": per_network,
            }
        )
    comparisons = {}
    for network in plan.settings["networks"]:
        comparisons[network] = _comparisons(layers, network, plan.settings.get("comparator"), alpha)
    return {
        "search": plan.search.name,
        "settings": plan.settings,
        "seeds": plan.seeds,
        "layers": layers,
        "comparisons": comparisons,
    }


def stored_transfer(store: Any, name: str) -> dict[str, Any] | None:
    """The transfer of the search ``name`` as stored (``transfer --format json``, ``report``
    and the dashboard): every layer transferred for it, in the order they joined, under its
    settings and comparator, on every seed stored; None when nothing was transferred."""
    found = store.search(name)
    done = (found["config"] or {}).get(TRANSFER_KEY)
    if done is None:
        return None
    search = SearchSettings.from_config(
        {"name": name, "space": found["space"], **(found["config"] or {})}
    )
    layers = [
        TransferLayer(
            entry["label"],
            entry["kind"],
            entry["candidate"],
            store.candidate(entry["candidate"])["graph"],
        )
        for entry in done["layers"]
    ]
    seeds = sorted(
        {
            e["seed"]
            for layer in layers
            for e in store.candidate(layer.candidate)["evaluations"]
            if e["stage"] == STAGE
            and (e["figures"] or {}).get("key") == done["key"]
            and e["figures"].get("phase") == "final"
        }
    )
    plan = TransferPlan(
        search,
        settings_space(search),
        {**done["settings"], "comparator": done["comparator"]},
        seeds,
        layers,
    )
    return transfer_results(store, plan)


def _split_accuracy(e: dict[str, Any], split: str) -> float | None:
    if e["status"] != "completed":
        return None
    if split == "transfer_val":
        return e["accuracy"]
    return ((e.get("figures") or {}).get(split) or {}).get("accuracy")


def _network_figures(runs: dict[int, dict[str, Any]], rate: float | None) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "learning_rate": rate,
        "seeds": sorted(runs),
        "diverged": sorted(s for s, e in runs.items() if e["status"] != "completed"),
    }
    for split in ("transfer_val", "transfer_test", "test", "transfer_val_batch_statistics"):
        values = {seed: _split_accuracy(e, split) for seed, e in runs.items()}
        values = {seed: v for seed, v in values.items() if v is not None}
        figures[split] = {
            "by_seed": values,
            "interval": mean_interval(list(values.values())).to_dict() if values else None,
        }
    figures["curves"] = {seed: (e.get("figures") or {}).get("curve") for seed, e in runs.items()}
    return figures


def _comparisons(
    layers: list[dict[str, Any]], network: str, comparator: str | None, alpha: float
) -> dict[str, Any]:
    def val_mean(layer: dict[str, Any]) -> float | None:
        interval = layer["networks"][network]["transfer_val"]["interval"]
        return None if interval is None else interval["mean"]

    if comparator is None:
        zoo = [layer for layer in layers if layer["kind"] == "baseline" and val_mean(layer)]
        if not zoo:
            return {"comparator": None, "rule": "no zoo layer completed", "results": []}
        reference = max(zoo, key=lambda layer: (val_mean(layer), layer["label"]))
        rule = "the zoo layer with the best mean transfer-validation accuracy"
    else:
        reference = next(layer for layer in layers if layer["label"] == comparator)
        rule = "named with --comparator"
    scores = reference["networks"][network]["transfer_test"]["by_seed"]
    others = {
        layer["label"]: layer["networks"][network]["transfer_test"]["by_seed"]
        for layer in layers
        if layer is not reference
        and layer["kind"] != "baseline"
        and layer["networks"][network]["transfer_test"]["by_seed"]
    }
    others = {label: by_seed for label, by_seed in others.items() if set(by_seed) & set(scores)}
    results = compare_paired(scores, others, alpha=alpha) if scores and others else []
    return {
        "comparator": reference["label"],
        "rule": rule,
        "split": "transfer_test",
        "alpha": alpha,
        "results": [c.to_dict() for c in results],
    }


# -- as tables (the CLI and the report print the same) -------------------------------------


def transfer_table(results: dict[str, Any], network: str) -> tuple[list[str], list[list[str]]]:
    """The layers on ``network``: header and rows of text."""
    from evonorm_search.stats import interval_text

    rows = []
    for layer in results["layers"]:
        n = layer["networks"][network]
        rate = "-" if n["learning_rate"] is None else f"{n['learning_rate']:g}"
        rows.append(
            [
                layer["label"],
                layer["kind"],
                rate,
                *[
                    interval_text(n[split]["interval"])
                    for split in ("transfer_val", "transfer_test", "test")
                ],
                layer["formula"] or "-",
            ]
        )
    return [network, "kind", "lr", "transfer-validation", "transfer-test", "test", "formula"], rows


def comparison_table(comparison: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """The comparison fixed in advance on one network: the sentence that states it, and
    its header and rows of text."""
    from evonorm_search.stats import interval_text

    statement = (
        f"each layer the search chose against {comparison['comparator']} "
        f"({comparison['rule']}), paired over shared seeds on transfer-test, "
        f"Holm-corrected over {len(comparison['results'])} comparisons at alpha "
        f"{comparison.get('alpha', 0.05):g}"
    )
    rows = [
        [
            c["name"],
            interval_text(c["difference"]),
            interval_text(c["simultaneous"]),
            "-" if c["p"] is None else f"{c['p']:.3g}",
            "-" if c["p_holm"] is None else f"{c['p_holm']:.3g}",
            c["verdict"],
        ]
        for c in comparison["results"]
    ]
    return (
        statement,
        ["layer", "difference [95% t]", "simultaneous", "p", "p (Holm)", "verdict"],
        rows,
    )

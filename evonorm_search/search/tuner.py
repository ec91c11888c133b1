"""Ray Tune, driven from this process: a ``Searcher`` that hands each decision to a driver
(``finished``, ``suggest``, ``complete``; the search, a retune and the unit runs of
reevaluate and transfer are drivers), and ``tune_run``, which starts Ray where needed and
runs a driver's trials to the end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from typing import Any

__all__ = ["tune_run"]

_DRIVERS: dict[int, Any] = {}  # the drivers of this process, by id


def _searcher(driver: Any) -> Any:
    """A Ray Tune searcher that hands over to ``driver``.  Tune pickles its searcher into
    the experiment state: it pickles as the driver's key (the driver, holding the
    database connection, stays in this process)."""
    from ray.tune.search import Searcher

    class _Searcher(Searcher):
        def __init__(self, key: int) -> None:
            super().__init__()
            self.key = key

        def __reduce__(self):
            return (_searcher_of, (self.key,))

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            if _DRIVERS[self.key].finished():
                return Searcher.FINISHED
            return _DRIVERS[self.key].suggest(trial_id)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            # A unit's intermediate result (a transfer run's checkpoint); the search's
            # own trials report once.
            intermediate = getattr(_DRIVERS[self.key], "intermediate_result", None)
            if intermediate is not None:
                intermediate(trial_id, result)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            _DRIVERS[self.key].complete(trial_id, result, error)

        def save(self, checkpoint_path: str) -> None:
            pass  # the database is the search's state

        def restore(self, checkpoint_path: str) -> None:
            pass

    _DRIVERS[id(driver)] = driver
    return _Searcher(id(driver))


def _searcher_of(key: int) -> Any:
    return _searcher(_DRIVERS[key])


def tune_run(
    trainable: Callable[[dict[str, Any]], None],
    driver: Any,
    *,
    name: str,
    scratch_prefix: str,
    workers: int,
    resources: dict[str, float],
    cpus: int,
    max_failures: int,
    address: str | None,
) -> bool:
    """Run ``driver``'s trials (``finished``, ``suggest`` and ``complete``, through
    ``_searcher``) on Ray Tune, at most ``workers`` at once, each a ``trainable`` with
    ``resources``; Ray is started here unless it runs already (``cpus`` on a local one,
    else the cluster at ``address``).  Returns whether the run was interrupted (Ctrl-C).

    Without ``address`` the local instance is private ("local"): a bare ``ray.init()``
    would join whatever cluster ``ray start`` left on the machine (or ``RAY_ADDRESS``
    names), which nobody asked for and which refuses ``num_cpus``."""
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    if not ray.is_initialized():
        from evonorm_search.isolation import started_from_neutral_directory

        # Not from the user's directory: Ray would put it on every worker's sys.path.
        with started_from_neutral_directory():
            ray.init(
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                **({} if address else {"num_cpus": cpus}),
            )
    scratch = tempfile.mkdtemp(prefix=scratch_prefix)  # Tune's own experiment files
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(_searcher(driver), max_concurrent=workers),
            num_samples=-1,
            trial_dirname_creator=lambda trial: trial.trial_id,
            # A worker process keeps torch, the kernels' imports and the data loaded from
            # one trial to the next (a fresh process per trial cost seconds each).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            verbose=0,
            storage_path=scratch,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return True
    finally:
        _DRIVERS.pop(id(driver), None)
        shutil.rmtree(scratch, ignore_errors=True)
    return False

"""The ``evonorm-search`` command line.

Every error a user can cause (bad formula or graph JSON, unknown space or baseline, bad
option) ends as one line on stderr and exit code 2, never a traceback.

``root`` holds the click group and its one-line error handling; ``options`` the options
that several commands share; ``render`` the tables, JSON and CSV; one module per group of
commands holds their commands: ``explore`` (spaces, baselines, formula), ``queries``
(status, pareto, show, db), ``compiling`` (compile), ``export``, ``report``,
``dashboard``, ``runs`` (run, resume, baselines evaluate), ``rerank`` (retune,
reevaluate) and ``transfer``.  Commands import their heavy dependencies (torch's
compiler, Ray, SQLAlchemy, triton) when they run, not when the CLI loads.
"""

from evonorm_search.cli.root import cli, main

__all__ = ["cli", "main"]

"""The click group: ``--version``, and every error a user can cause as one line on stderr
and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from typing import Any

import click

from evonorm_search import __version__
from evonorm_search.cli import (
    compiling,
    dashboard,
    explore,
    export,
    queries,
    report,
    rerank,
    runs,
    transfer,
)
from evonorm_search.cli.render import PROGRAM, fail
from evonorm_search.errors import EvoNormError


class _OneLineErrors(click.Group):
    """Runs click without its standalone handling so that usage errors and our own errors
    print as one line and exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # bare `evonorm-search`: the help
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            fail(e.format_message() + hint)
        except (EvoNormError, click.ClickException) as e:
            fail(e.format_message() if isinstance(e, click.ClickException) else str(e))
        except click.Abort:
            fail("aborted", code=130)
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROGRAM)
def cli() -> None:
    """Search for normalization-activation layers (EvoNorm-style evolution)."""


for command in (
    explore.spaces,
    explore.baselines_command,
    explore.formula,
    queries.status,
    queries.pareto,
    queries.show,
    queries.db,
    compiling.compile_command,
    export.export_command,
    report.report,
    dashboard.dashboard,
    runs.run,
    runs.resume,
    rerank.retune,
    rerank.reevaluate,
    transfer.transfer,
):
    cli.add_command(command)


def main() -> None:
    cli.main(prog_name=PROGRAM)

"""The command line's --help: every command and option explains itself, the options that
commands share are one option (same help, same default) wherever they appear, and their
defaults and choices are the library's own."""

import dataclasses
import inspect
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from evonorm_search.catalog import DATASETS, PRESETS
from evonorm_search.cli import cli, options
from evonorm_search.codegen.aot import TARGETS
from evonorm_search.search.driver import SearchSettings
from evonorm_search.search.strategies import INITIAL_POPULATIONS, STRATEGIES
from evonorm_search.search.trial import COMPILE_ORDERS
from evonorm_search.space import DTYPES, CompileTarget


def walk(command=cli, path=()):
    """(path, command) for the root and every command below it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = dict(walk())
SEARCH_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(SearchSettings)
    if f.default is not dataclasses.MISSING
}


def help_text(path):
    result = CliRunner().invoke(
        cli, [*path, "--help"], prog_name="evonorm-search", terminal_width=100
    )
    return result.exit_code, result.stdout


def param(path, name):
    (found,) = [p for p in COMMANDS[path].params if p.name == name]
    return found


def default(p):
    return p.default() if callable(p.default) else p.default


def probe(*decorators):
    """The options these decorators declare, by name."""
    command = click.command()(options.stack(*decorators)(lambda **given: None))
    return {p.name: p for p in command.params}


# Every shared option as commands get it, and resume's variants (the search's own setting
# as the default).
SHARED = probe(
    options.db,
    options.output_format(),
    options.protocol,
    options.seed,
    options.verify,
    options.strategy,
    options.initial,
    options.compile_order,
    options.workers(),
    options.gpus_per_trial,
    options.address(),
    options.time_limit,
    options.worker_hours(),
    options.max_candidates(),
    options.compile_target,
)
AS_STARTED = probe(
    options.workers(as_started=True),
    options.address(as_started=True),
    options.worker_hours(as_started=True),
    options.max_candidates(as_started=True),
)


def test_the_root_help_lists_every_command():
    assert set(cli.commands) == {
        *("spaces", "baselines", "formula", "status", "pareto", "show", "db", "compile"),
        *("export", "report", "dashboard", "run", "resume", "retune", "reevaluate"),
        "transfer",
    }
    assert set(cli.commands["baselines"].commands) == {"evaluate"}
    assert set(cli.commands["db"].commands) == {"upgrade"}
    code, out = help_text(())
    assert code == 0
    listed = out.split("Commands:")[1]
    for name in cli.commands:
        assert f"\n  {name} " in listed, name


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "root")
def test_each_command_explains_itself_and_each_of_its_options(path):
    command = COMMANDS[path]
    assert (command.help or "").strip(), f"{path}: no help"
    code, out = help_text(path)
    assert code == 0, out
    named = set(re.findall(r"(?<![\w-])--?[\w][\w-]*", out))  # every option word
    for p in command.get_params(click.Context(command)):
        if isinstance(p, click.Option):
            assert (p.help or "").strip(), f"{path} {p.opts}: no help"
            for opt in (*p.opts, *p.secondary_opts):
                assert opt in named, f"{path}: {opt} not in --help"


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "root")
def test_a_shared_option_is_the_same_wherever_it_appears(path):
    for p in COMMANDS[path].params:
        variant = AS_STARTED if path == ("resume",) and p.name in AS_STARTED else SHARED
        expected = variant.get(p.name)
        if expected is None or expected.opts != p.opts:
            continue  # the command's own option (formula's --space is space_names)
        assert (p.help, default(p), p.metavar, p.show_default) == (
            expected.help,
            default(expected),
            expected.metavar,
            expected.show_default,
        ), (path, p.name)
        if p.name != "fmt":  # pareto's --format adds csv
            assert repr(p.type) == repr(expected.type), (path, p.name)


def test_shared_options_are_shared():
    """The options the decorators declare are used by the commands that need them, not
    declared again in a command: each appears at least where it is expected."""
    users = {
        name: {
            path
            for path, c in COMMANDS.items()
            for p in c.params
            if p.name == name and p.opts == o.opts
        }
        for name, o in SHARED.items()
    }
    assert {("run",), ("baselines", "evaluate")} <= users["space"]
    assert {("run",), ("baselines", "evaluate"), ("compile",)} <= users["verify"]
    runners = {("retune",), ("reevaluate",), ("transfer",), ("run",), ("baselines", "evaluate")}
    assert runners <= users["workers"]
    assert {("run",), ("resume",)} <= users["time_limit"]
    assert len(users["db_url"]) >= 12 and len(users["fmt"]) >= 9


def test_no_command_borrows_another_commands_option_objects():
    owners = {}
    for path, command in COMMANDS.items():
        for p in command.params:
            assert id(p) not in owners, f"{path} and {owners[id(p)]} share {p.opts}"
            owners[id(p)] = path


def test_search_options_default_as_the_driver_does():
    for path in [("run",), ("baselines", "evaluate")]:
        for p in COMMANDS[path].params:
            if p.name in SEARCH_DEFAULTS:
                assert p.default == SEARCH_DEFAULTS[p.name], (path, p.name)
    assert param(("run",), "max_failures").opts == ["--trial-retries"]
    for name in ("workers", "address", "worker_hours", "max_candidates"):  # as started
        assert param(("resume",), name).default is None


def test_choices_are_the_registries():
    def choices(path, name):
        return list(param(path, name).type.choices)

    assert choices(("run",), "dataset") == list(DATASETS)
    assert choices(("baselines", "evaluate"), "dataset") == list(DATASETS)
    assert choices(("run",), "preset") == list(PRESETS)
    assert choices(("run",), "strategy") == list(STRATEGIES)
    assert choices(("run",), "initial") == list(INITIAL_POPULATIONS)
    assert choices(("run",), "compile_order") == list(COMPILE_ORDERS)
    assert set(DTYPES) < set(choices(("compile",), "dtype"))
    assert choices(("status",), "fmt") == list(options.FORMATS)
    assert choices(("pareto",), "fmt") == [*options.FORMATS, "csv"]


def test_compile_defaults_are_a_space_without_a_compile_section():
    _, out = help_text(("compile",))
    target = CompileTarget()
    assert f"else {target.target})" in out and ", ".join(TARGETS) in out
    assert f"else {','.join(map(str, target.reference_shape))})" in out
    assert f"else {target.dtype})" in out


@pytest.mark.parametrize(
    "path, name, function",
    [
        (("compile",), "groups", "evonorm_search.codegen.compiler:compile_layer"),
        (("export",), "class_name", "evonorm_search.export:export_source"),
        (("report",), "top", "evonorm_search.report:write_report"),
        (("retune",), "seeds", "evonorm_search.search.retune:plan_retune"),
        (("retune",), "lr_trials", "evonorm_search.search.retune:plan_retune"),
        (("transfer",), "top", "evonorm_search.search.transfer:plan_transfer"),
        (("dashboard",), "host", "evonorm_search.dashboard:serve"),
        (("dashboard",), "port", "evonorm_search.dashboard:serve"),
    ],
)
def test_a_default_a_library_function_states_is_read_from_it(path, name, function):
    import importlib

    module, attribute = function.split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), attribute))
    expected = signature.parameters[name].default
    p = param(path, name)
    assert default(p) == expected
    option = "--" + name.replace("_", "-")
    _, out = help_text(path)
    shown = out.split(option, 1)[1].split("\n  -", 1)[0]
    assert f"[default: {expected}" in " ".join(shown.split()), shown


@pytest.mark.slow
def test_help_loads_no_heavy_dependency():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from evonorm_search.cli import cli\n"
        "for command in ([], ['run'], ['compile'], ['status']):\n"
        "    assert CliRunner().invoke(cli, [*command, '--help']).exit_code == 0, command\n"
        "heavy = ('ray', 'optuna', 'sqlalchemy', 'alembic', 'triton', 'matplotlib', 'starlette')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

import subprocess
import sys

import pytest

HEAVY = (
    "ray",
    "optuna",
    "sqlalchemy",
    "triton",
    "networkx",
    "alembic",
    "click",
    "rich",
    "matplotlib",
    "starlette",
    "jinja2",
    "uvicorn",
)


@pytest.mark.slow
def test_core_import_stays_light():
    """A discovered layer must run wherever torch runs: the core never loads the heavy
    dependencies (nor the CLI libraries)."""
    code = (
        "import sys, torch\n"
        "from evonorm_search import LayerGraph, GraphNormAct, GraphError, baselines\n"
        "from evonorm_search.space import load_space\n"
        "layer = GraphNormAct(baselines.get('evonorm_b0'), 8)\n"
        "layer(torch.randn(4, 8, 3, 3)).sum().backward()\n"
        "from evonorm_search.export import export_source\n"
        "export_source(baselines.get('evonorm_b0'))\n"
        "load_space('evonorm_b')\n"
        "LayerGraph.parse('x * v1').structural_hash()\n"
        "from evonorm_search.search import make_strategy\n"
        "make_strategy('evolution', load_space('evonorm_b'), ['resnet'], seed=0).ask()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_module_borrows_another_modules_private_names():
    """A name that starts with ``_`` is its module's own: the package never imports one from
    another module (``import-linter`` checks the layers; this checks the privacy)."""
    import ast
    from pathlib import Path

    import evonorm_search

    root = Path(evonorm_search.__file__).parent
    borrowed = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "evonorm_search"
            ):
                names = [a.name for a in node.names if a.name.startswith("_")]
                borrowed += [f"{path.relative_to(root)}: {node.module}.{n}" for n in names]
    assert [b for b in borrowed if not b.endswith("__version__")] == []

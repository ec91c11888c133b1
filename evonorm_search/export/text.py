"""The text an exported file is made of besides its forward pass: the carried modules' own
source (``eager.py``, ``launch.py``, ``customop.py``), their imports gathered once, and
docstring-safe text."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from evonorm_search import eager


def carried_text(module: ModuleType) -> str:
    """A carried module's code below its imports, under a rule naming it, its docstring
    first as comments."""
    path = Path(module.__file__)
    tree = ast.parse(path.read_text())
    last_import = max(
        node.end_lineno for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
    )
    name = f"evonorm_search/{path.relative_to(Path(eager.__file__).parent).as_posix()}"
    rule = f"# -- {name}, verbatim below its docstring "
    notes = [f"# {line}".rstrip() for line in ast.get_docstring(tree).splitlines()]
    code = path.read_text().splitlines()[last_import:]
    return "\n".join([rule.ljust(92, "-"), "#", *notes, "", *code]).strip("\n")


def imports_of(modules: tuple[ModuleType, ...], extra: list[str]) -> str:
    """The import statements of the carried ``modules`` (their imports of evonorm_search
    left out: the text they import is carried too) and ``extra`` ones, merged, sorted."""
    plain, names = set(extra), {}
    for module in modules:
        for node in ast.parse(Path(module.__file__).read_text()).body:
            if isinstance(node, ast.Import):
                plain |= {alias.name for alias in node.names}
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module != "__future__"
                and not (node.module or "").startswith("evonorm_search")
            ):
                names.setdefault(node.module, set()).update(a.name for a in node.names)

    def is_torch(module: str) -> bool:
        return module.split(".")[0] == "torch"

    lines = [f"import {name}" for name in sorted(plain - {"torch"})]
    froms = [(m, f"from {m} import {', '.join(sorted(n))}") for m, n in sorted(names.items())]
    lines += [line for m, line in froms if not is_torch(m)]
    lines += ["", "import torch", *[line for m, line in froms if is_torch(m)]]
    return "\n".join(lines)


def doc_text(text: str) -> str:
    """``text`` escaped for a docstring: a JSON string's contents has no unescaped quote
    or backslash and no line break, so it cannot end the docstring or change its code."""
    return json.dumps(text)[1:-1]


def provenance_text(provenance: Mapping[str, Any]) -> str:
    """The provenance as docstring lines ``key: value`` (strings as they are, other values
    as their repr), every one escaped."""
    if not provenance:
        return ""
    lines = "".join(
        f"        {doc_text(str(key))}: "
        f"{doc_text(value if isinstance(value, str) else repr(value))}\n"
        for key, value in provenance.items()
    )
    return f"\n    Found by evonorm-search:\n{lines}"

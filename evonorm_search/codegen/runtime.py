"""Loading generated kernels: a layer's kernel module as a real file in a cache.

Generated source is written to a cache directory as a real ``.py`` file named by its
content hash (triton reads a kernel's source file; the interpreter needs one too), with an
atomic rename so that concurrent processes never see half a file.  Triton's own cache keeps
the compiled binaries.  Launching the kernels is ``launch``'s work, which needs nothing of
this package (an exported layer carries its text).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from evonorm_search.codegen.source import LayerSource

__all__ = ["cache_dir", "load_module", "write_source"]


def cache_dir() -> Path:
    """``$EVONORM_KERNEL_CACHE``, else ``~/.cache/evonorm-search/kernels``."""
    default = Path.home() / ".cache" / "evonorm-search" / "kernels"
    return Path(os.environ.get("EVONORM_KERNEL_CACHE") or default)


def write_source(source: LayerSource, directory: Path) -> Path:
    """``directory/evonorm_kernels_<digest>.py``, written unless it holds the text already
    (atomically: a concurrent reader sees the old file or the new one, never half)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"evonorm_kernels_{source.digest}.py"
    if not path.is_file() or path.read_text() != source.text:
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
            f.write(source.text)
        os.replace(f.name, path)
    return path


def load_module(source: LayerSource) -> ModuleType:
    """The generated module, written once to the cache and imported (memoised per
    process by content hash)."""
    name = f"evonorm_kernels_{source.digest}"
    if name in sys.modules:
        return sys.modules[name]
    path = write_source(source, cache_dir())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

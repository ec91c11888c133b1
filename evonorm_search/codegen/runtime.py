"""Loading generated kernels: a layer's kernel module as a real file in a cache.

Generated source is written to a cache directory private to the user (0700; one that
others can write is refused) as a real ``.py`` file named by its content hash (triton reads
a kernel's source file; the interpreter needs one too), with an atomic rename so that
concurrent processes never see half a file.  Triton's own cache keeps
the compiled binaries.  Launching the kernels is ``launch``'s work, which needs nothing of
this package (an exported layer carries its text).
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from evonorm_search.codegen.source import LayerSource
from evonorm_search.errors import KernelCacheError

__all__ = ["cache_dir", "load_module", "private_cache_dir", "write_source"]


def cache_dir() -> Path:
    """``$EVONORM_KERNEL_CACHE``, else ``~/.cache/evonorm-search/kernels``."""
    default = Path.home() / ".cache" / "evonorm-search" / "kernels"
    return Path(os.environ.get("EVONORM_KERNEL_CACHE") or default)


def private_cache_dir() -> Path:
    """``cache_dir()``, created private to this user (0700), or a KernelCacheError where
    another user owns it or may write into it: its files are imported, and triton reads
    them again when it defines the kernels, so whoever can write there can run code here."""
    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as e:
        raise KernelCacheError(
            f"cannot use the kernel cache {directory}: {e.strerror or e}"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise KernelCacheError(f"the kernel cache {directory} is not a directory")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise KernelCacheError(
            f"the kernel cache {directory} belongs to another user: set "
            "EVONORM_KERNEL_CACHE to a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KernelCacheError(
            f"the kernel cache {directory} can be written by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o}): chmod 700 it, or set "
            "EVONORM_KERNEL_CACHE to a directory of your own"
        )
    return directory


def write_source(source: LayerSource, directory: Path) -> Path:
    """``directory/evonorm_kernels_<digest>.py``, written unless it holds the text already
    (atomically: a concurrent reader sees the old file or the new one, never half; a failed
    write leaves no temporary file behind)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"evonorm_kernels_{source.digest}.py"
    if not path.is_file() or path.read_text() != source.text:
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
            temporary = Path(f.name)
        try:
            temporary.write_text(source.text)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return path


def load_module(source: LayerSource) -> ModuleType:
    """The generated module, written once to the cache and imported (memoised per
    process by content hash)."""
    name = f"evonorm_kernels_{source.digest}"
    if name in sys.modules:
        return sys.modules[name]
    path = write_source(source, private_cache_dir())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

"""Datasets for proxy training: CIFAR-10, scikit-learn's digits, and a synthetic set.

Everything is preloaded as tensors on the training device; batches are drawn, augmented
(random crop and horizontal flip for CIFAR-10) and normalised there, in batch, with no
DataLoader worker processes.

Every dataset is split once, by a fixed-seed permutation of its training images, into four
disjoint parts (``Dataset.indices`` records which image went where):

- ``transfer_test`` and ``transfer_val`` (``TRANSFER_SLICE`` images each, carved first, so
  they do not move when a space changes its validation size): never trained on by anything.
  Transfer-validation serves every choice made after a search (learning rates, the
  comparator, retune's scores); transfer-test serves only final tables.
- ``val``: the search's validation split (``validation`` images), which selects layers.
- ``train``: the rest, the only images any training reads (``Dataset.batches``).

CIFAR-10's official ``test_batch`` is optional; where present it is the ``test`` split,
reported beside transfer-test.

The CIFAR-10 "python version" is a pickle, and a crafted pickle can run code when loaded,
so it is read with an unpickler that admits only what the official format needs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from evonorm_search.catalog import DATASETS
from evonorm_search.errors import EvoNormError

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DataError",
    "Dataset",
    "default_data_dir",
    "download_cifar10",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "synthetic",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_REQUIRED = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)))


class DataError(EvoNormError, OSError):
    """A dataset is missing, incomplete, corrupt or could not be downloaded."""


@dataclass(frozen=True)
class Dataset:
    """Images (uint8 or float, (N, C, H, W)) and int64 labels, split for training.

    ``mean`` and ``std`` (per channel, of the training images scaled to [0, 1]) normalise
    every batch; ``augment`` turns on random crops (4-pixel zero padding) and horizontal
    flips for training batches.
    """

    name: str
    classes: tuple[str, ...]
    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    mean: Tensor
    std: Tensor
    augment: bool
    test_images: Tensor | None = None
    test_labels: Tensor | None = None
    transfer_val_images: Tensor | None = None
    transfer_val_labels: Tensor | None = None
    transfer_test_images: Tensor | None = None
    transfer_test_labels: Tensor | None = None
    # Which of the source's training images each split holds (positions before the split).
    indices: dict[str, Tensor] = field(default_factory=dict, compare=False)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def size(self) -> int:
        return self.train_images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on ``device``."""
        moved = {
            name: value.to(device)
            for name, value in self.__dict__.items()
            if isinstance(value, Tensor)
        }  # the indices stay on the CPU: bookkeeping, never read by training
        return replace(self, **moved)

    def normalise(self, images: Tensor) -> Tensor:
        """Float images, scaled to [0, 1] and standardised per channel."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        view = (1, -1, 1, 1)
        return (x - self.mean.view(view)) / self.std.view(view)

    def batches(self, batch_size: int, generator: torch.Generator) -> BatchStream:
        """Training batches forever: reshuffled every epoch, augmented, normalised.
        ``generator`` (on the data's device) fixes the order and the augmentation."""
        return BatchStream(self, batch_size, generator)

    def evaluation_batches(
        self, split: str = "val", batch_size: int = 1000
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of an evaluation split (one of ``EVALUATION_SPLITS``), in order,
        normalised."""
        if split not in EVALUATION_SPLITS:
            raise ValueError(f"unknown split {split!r} (one of {', '.join(EVALUATION_SPLITS)})")
        images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
        if images is None:
            raise DataError(f"{self.name} has no {split} split")
        for start in range(0, len(labels), batch_size):
            yield (
                self.normalise(images[start : start + batch_size]),
                labels[start : start + batch_size],
            )


class BatchStream:
    """The training batches of a dataset, as ``Dataset.batches`` describes them, with a
    state that can be saved and restored, so that a checkpointed run resumes on exactly the
    batches it would have seen: the generator's state, the epoch's order, the position."""

    def __init__(self, data: Dataset, batch_size: int, generator: torch.Generator) -> None:
        n = len(data.train_labels)
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the {n} training images")
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.order: Tensor | None = None
        self.position = 0

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        data, n = self.data, len(self.data.train_labels)
        if self.order is None or self.position + self.batch_size > n:  # a new epoch
            self.order = torch.randperm(n, generator=self.generator, device=data.device)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        images = data.train_images[index]
        if data.augment:
            images = _augment(images, self.generator)
        return data.normalise(images), data.train_labels[index]

    def state_dict(self) -> dict[str, object]:
        return {
            "generator": self.generator.get_state(),
            "position": self.position,
            "order": None if self.order is None else self.order.cpu(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.generator.set_state(state["generator"])
        self.position = int(state["position"])
        order = state["order"]
        self.order = None if order is None else order.to(self.data.device)


def _augment(images: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crops of the zero-padded images and random horizontal flips, in batch."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=images.device)
    rows = (dy + torch.arange(h, device=images.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=images.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    cropped = padded[batch, channel, rows, cols]
    flip = torch.rand(n, generator=generator, device=images.device) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), cropped.flip(3), cropped)


def _split(
    images: Tensor, labels: Tensor, validation: int, transfer: int, seed: int
) -> dict[str, Tensor]:
    """The fixed-seed partition of the module docstring: index tensors per split."""
    n = len(labels)
    if validation < 1 or transfer < 0 or validation + 2 * transfer >= n:
        raise ValueError(
            f"cannot hold out {validation} validation and 2 x {transfer} transfer images of "
            f"{n} and still train (validation >= 1, transfer >= 0, their sum below {n})"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = {
        "transfer_test": (0, transfer),
        "transfer_val": (transfer, 2 * transfer),
        "val": (2 * transfer, 2 * transfer + validation),
        "train": (2 * transfer + validation, n),
    }
    return {name: order[start:stop] for name, (start, stop) in bounds.items()}


def _dataset_from(
    name: str,
    classes: tuple[str, ...],
    images: Tensor,
    labels: Tensor,
    *,
    validation: int,
    transfer: int,
    seed: int,
    augment: bool,
    test: tuple[Tensor | None, Tensor | None] = (None, None),
) -> Dataset:
    """A dataset split as the module docstring says; statistics from its training part."""
    index = _split(images, labels, validation, transfer, seed)
    parts = {
        f"{split}_{kind}": tensor[index[split]]
        for split in ("train", "val", "transfer_val", "transfer_test")
        for kind, tensor in (("images", images), ("labels", labels))
    }
    if not transfer:
        parts.update(
            dict.fromkeys(
                (
                    "transfer_val_images",
                    "transfer_val_labels",
                    "transfer_test_images",
                    "transfer_test_labels",
                )
            )
        )
    mean, std = _statistics(parts["train_images"])
    return Dataset(
        name,
        classes,
        mean=mean,
        std=std,
        augment=augment,
        test_images=test[0],
        test_labels=test[1],
        indices=index,
        **parts,
    )


def _statistics(images: Tensor) -> tuple[Tensor, Tensor]:
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp(min=1e-6)


# ------------------------------------------------------------------ CIFAR-10


class _CifarUnpickler(pickle.Unpickler):
    """Admits only the globals the official CIFAR-10 batches use: numpy arrays."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),  # pickled with numpy 1 (the official files)
            ("numpy._core.multiarray", "_reconstruct"),  # pickled with numpy 2
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in CIFAR-10 data")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            data = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{path} is not a CIFAR-10 python batch: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch: holds {type(data).__name__}")
    return data


def _images_and_labels(path: Path) -> tuple[Tensor, Tensor]:
    data = _read_batch(path)
    images, labels = data.get(b"data"), data.get(b"labels")
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != 3 * 32 * 32
        or not isinstance(labels, list)
        or len(labels) != len(images)
    ):
        raise DataError(f"{path} is not a CIFAR-10 python batch: wrong 'data' or 'labels'")
    labels_t = torch.tensor(labels, dtype=torch.int64)
    if len(labels_t) and (labels_t.min() < 0 or labels_t.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return torch.from_numpy(images.reshape(-1, 3, 32, 32).copy()), labels_t


# Images each dataset holds out of its training data to validate, by default.
DEFAULT_VALIDATION = {"cifar10": 5000, "digits": 297, "synthetic": 200}
# Images in each of the two transfer slices (transfer-validation, transfer-test).
TRANSFER_SLICE = {"cifar10": 2500, "digits": 150, "synthetic": 100}
EVALUATION_SPLITS = ("val", "transfer_val", "transfer_test", "test")


def load_cifar10(
    directory: str | Path,
    *,
    validation: int = DEFAULT_VALIDATION["cifar10"],
    transfer: int = TRANSFER_SLICE["cifar10"],
    seed: int = 0,
    device: str = "cpu",
) -> Dataset:
    """CIFAR-10 from ``directory`` in the official python format.

    ``data_batch_1..5`` and ``batches.meta`` are required, ``test_batch`` is optional.  The
    splits (``validation`` images, two slices of ``transfer``, fixed ``seed``) come from
    the data batches.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"CIFAR-10 directory {directory} does not exist (download it with "
            "evonorm_search.proxy.data.download_cifar10)"
        )
    missing = [name for name in CIFAR10_REQUIRED if not (directory / name).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 in {directory} is incomplete: missing {', '.join(missing)}")
    meta = _read_batch(directory / "batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{directory / 'batches.meta'} has no list of 10 label_names")
    parts = [_images_and_labels(directory / f"data_batch_{i}") for i in range(1, 6)]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    test = directory / "test_batch"
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return _dataset_from(
        "cifar10",
        classes,
        images,
        labels,
        validation=validation,
        transfer=transfer,
        seed=seed,
        augment=True,
        test=_images_and_labels(test) if test.is_file() else (None, None),
    ).to(device)


def download_cifar10(
    directory: str | Path, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, timeout: float = 60
) -> Path:
    """Download and unpack the official CIFAR-10 archive into ``directory``; returns the
    ``cifar-10-batches-py`` directory.  The archive's MD5 is checked before anything is
    unpacked, members are extracted with tarfile's safe ``data`` filter, and the result
    appears all at once (nothing half-written is left behind on failure)."""
    directory = Path(directory)
    target = directory / CIFAR10_DIR
    if target.is_dir():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".cifar10-") as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        digest = hashlib.md5()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as f:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
        except OSError as e:
            raise DataError(f"cannot download CIFAR-10 from {url}: {e}") from None
        if digest.hexdigest() != md5:
            raise DataError(
                f"CIFAR-10 archive from {url} has MD5 {digest.hexdigest()}, expected {md5}"
            )
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"cannot unpack the CIFAR-10 archive: {e}") from None
        if not (unpacked / CIFAR10_DIR).is_dir():
            raise DataError(f"the CIFAR-10 archive holds no {CIFAR10_DIR}/ directory")
        os.replace(unpacked / CIFAR10_DIR, target)
    return target


# ------------------------------------------------------------------ small datasets


def load_digits(
    *,
    validation: int = DEFAULT_VALIDATION["digits"],
    transfer: int = TRANSFER_SLICE["digits"],
    seed: int = 0,
    device: str = "cpu",
) -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images, 10 classes."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    labels = torch.tensor(digits.target, dtype=torch.int64)
    classes = tuple(str(d) for d in range(10))
    return _dataset_from(
        "digits",
        classes,
        images,
        labels,
        validation=validation,
        transfer=transfer,
        seed=seed,
        augment=False,
    ).to(device)


def synthetic(
    *,
    samples: int = 1200,
    size: int = 8,
    channels: int = 1,
    classes: int = 10,
    validation: int = DEFAULT_VALIDATION["synthetic"],
    transfer: int = TRANSFER_SLICE["synthetic"],
    seed: int = 0,
    device: str = "cpu",
) -> Dataset:
    """A procedural set for unit tests: each class is a random smooth prototype image;
    samples are prototypes at a random brightness and contrast plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(classes, channels, 4, 4, generator=g)
    prototypes = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    labels = torch.randint(0, classes, (samples,), generator=g)
    gain = torch.rand(samples, 1, 1, 1, generator=g) + 0.5
    shift = torch.rand(samples, 1, 1, 1, generator=g) - 0.5
    noise = torch.randn(samples, channels, size, size, generator=g) * 0.1
    images = prototypes[labels] * gain + shift + noise
    return _dataset_from(
        "synthetic",
        tuple(f"class {c}" for c in range(classes)),
        images,
        labels,
        validation=validation,
        transfer=transfer,
        seed=seed,
        augment=False,
    ).to(device)


def default_data_dir() -> Path:
    """Where datasets live: ``$EVONORM_DATA``, else ``~/.cache/evonorm-search``."""
    return Path(os.environ.get("EVONORM_DATA") or Path.home() / ".cache" / "evonorm-search")


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    validation: int | None = None,
    transfer: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Dataset:
    """A dataset by name: ``cifar10`` (from ``root``, the directory holding the batches;
    default ``default_data_dir()/cifar-10-batches-py``), ``digits`` or ``synthetic``;
    ``validation`` and ``transfer`` default to the dataset's own sizes."""
    sizes = {
        key: value
        for key, value in (("validation", validation), ("transfer", transfer))
        if value is not None
    }
    if name == "cifar10":
        directory = Path(root) if root is not None else default_data_dir() / CIFAR10_DIR
        return load_cifar10(directory, seed=seed, device=device, **sizes)
    if name == "digits":
        return load_digits(seed=seed, device=device, **sizes)
    if name == "synthetic":
        return synthetic(seed=seed, device=device, **sizes)
    raise DataError(f"unknown dataset {name!r} (available: {', '.join(DATASETS)})")

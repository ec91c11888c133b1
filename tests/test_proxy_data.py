import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from evonorm_search.proxy.data import (
    DataError,
    download_cifar10,
    load_cifar10,
    load_dataset,
    load_digits,
    synthetic,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"
needs_cifar = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"CIFAR-10 not found at {SHARED} (the shared test data)"
)


def write_cifar(directory: Path, per_batch: int = 20, test: bool = True) -> Path:
    """A small CIFAR-10 directory in the official python format."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    with (directory / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + (["test_batch"] if test else []):
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"filenames": [b"x.png"] * per_batch,
        }
        with (directory / name).open("wb") as f:
            pickle.dump(batch, f)
    return directory


@needs_cifar
def test_reads_the_shared_cifar10():
    data = load_cifar10(SHARED, validation=5000)
    assert data.train_images.shape == (40000, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.val_images.shape == (5000, 3, 32, 32)
    assert data.transfer_val_images.shape == data.transfer_test_images.shape == (2500, 3, 32, 32)
    assert data.classes[:3] == ("airplane", "automobile", "bird") and data.num_classes == 10
    assert data.test_images is None  # no test_batch in the shared folder
    labels = [
        data.train_labels,
        data.val_labels,
        data.transfer_val_labels,
        data.transfer_test_labels,
    ]
    counts = torch.bincount(torch.cat(labels), minlength=10)
    assert counts.tolist() == [5000] * 10  # the split loses nothing
    # The transfer slices do not move when the search's validation size does.
    other = load_cifar10(SHARED, validation=2000)
    assert torch.equal(other.indices["transfer_val"], data.indices["transfer_val"])
    assert torch.equal(other.transfer_test_images, data.transfer_test_images)
    torch.testing.assert_close(data.mean, torch.tensor([0.49, 0.48, 0.45]), atol=0.01, rtol=0)


def test_reads_a_written_batch_set_with_test_batch(tmp_path):
    data = load_cifar10(write_cifar(tmp_path / "c"), validation=10, transfer=5)
    assert len(data.train_labels) == 80 and len(data.val_labels) == 10
    assert len(data.transfer_val_labels) == len(data.transfer_test_labels) == 5
    assert data.test_images.shape == (20, 3, 32, 32)
    again = load_cifar10(tmp_path / "c", validation=10, transfer=5)
    assert torch.equal(data.val_labels, again.val_labels)  # the split is seeded
    other = load_cifar10(tmp_path / "c", validation=10, transfer=5, seed=1)
    assert not torch.equal(data.val_images, other.val_images)


def test_missing_files_are_named(tmp_path):
    directory = write_cifar(tmp_path / "c", test=False)
    (directory / "data_batch_3").unlink()
    (directory / "batches.meta").unlink()
    with pytest.raises(DataError, match=r"missing batches\.meta, data_batch_3"):
        load_cifar10(directory)
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle", "is not a CIFAR-10 python batch"),
        (pickle.dumps([1, 2, 3]), "holds list"),
        (pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}), "wrong 'data'"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}), "labels outside"),
    ],
)
def test_corrupt_batches_are_named(tmp_path, content, message):
    directory = write_cifar(tmp_path / "c", test=False)
    (directory / "data_batch_2").write_bytes(content)
    with pytest.raises(DataError) as info:
        load_cifar10(directory, validation=5)
    assert "data_batch_2" in str(info.value) and message in str(info.value)


class Payload:
    """Unpickling this runs ``Path.touch`` on a marker file: an attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_with_any_other_global_is_refused(tmp_path):
    directory = write_cifar(tmp_path / "c", test=False)
    marker = tmp_path / "pwned"
    (directory / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(marker)}))
    with pytest.raises(DataError, match=r"global pathlib\.\w*Path\.touch is not allowed"):
        load_cifar10(directory)
    assert not marker.exists()


def archive_of(directory: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(directory, arcname="cifar-10-batches-py")
        for name, content in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture
def serve():
    """Serve bytes at http://127.0.0.1:<port>/archive.tar.gz; yields a function."""
    servers = []

    def start(content: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/archive.tar.gz"

    yield start
    for server in servers:
        server.shutdown()


def test_download_checks_the_md5_and_unpacks(tmp_path, serve):
    archive = archive_of(write_cifar(tmp_path / "source"))
    url = serve(archive)
    target = download_cifar10(tmp_path / "data", url=url, md5=hashlib.md5(archive).hexdigest())
    assert target == tmp_path / "data" / "cifar-10-batches-py"
    assert load_cifar10(target, validation=10, transfer=5).test_images is not None
    # Already there: no second download (a wrong checksum would fail otherwise).
    assert download_cifar10(tmp_path / "data", url=url, md5="0" * 32) == target


def test_download_with_a_wrong_md5_leaves_nothing(tmp_path, serve):
    url = serve(archive_of(write_cifar(tmp_path / "source")))
    with pytest.raises(DataError, match="has MD5"):
        download_cifar10(tmp_path / "data", url=url, md5="0" * 32)
    assert list((tmp_path / "data").iterdir()) == []


def test_download_refuses_members_outside_the_target(tmp_path, serve):
    archive = archive_of(write_cifar(tmp_path / "source"), {"../escape.txt": b"x"})
    url = serve(archive)
    with pytest.raises(DataError, match="cannot unpack"):
        download_cifar10(tmp_path / "data", url=url, md5=hashlib.md5(archive).hexdigest())
    assert not (tmp_path / "escape.txt").exists()
    assert list((tmp_path / "data").iterdir()) == []


def test_download_reports_an_unreachable_server(tmp_path):
    with pytest.raises(DataError, match="cannot download CIFAR-10"):
        download_cifar10(tmp_path / "d", url="http://127.0.0.1:9/none.tar.gz", timeout=2)


def test_digits_and_synthetic():
    digits = load_digits()
    assert digits.train_images.shape == (1200, 1, 8, 8) and len(digits.val_labels) == 297
    assert len(digits.transfer_val_labels) == len(digits.transfer_test_labels) == 150
    assert digits.num_classes == 10 and not digits.augment
    a, b = synthetic(seed=3), synthetic(seed=3)
    assert torch.equal(a.train_images, b.train_images)
    assert a.size == 8 and a.channels == 1


def test_batches_are_seeded_augmented_and_normalised(tmp_path):
    data = load_cifar10(write_cifar(tmp_path / "c", per_batch=64), validation=20, transfer=10)
    first = next(data.batches(32, torch.Generator().manual_seed(5)))
    again = next(data.batches(32, torch.Generator().manual_seed(5)))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape == (32, 3, 32, 32) and first[0].dtype == torch.float32
    plain = data.normalise(data.train_images[:256])
    assert abs(plain.mean().item()) < 0.1 and abs(plain.std().item() - 1) < 0.1
    # Augmented images are crops and flips of originals: zero-padded borders appear.
    padding = (0 - data.mean.view(1, 3, 1, 1)) / data.std.view(1, 3, 1, 1)
    assert torch.isclose(first[0], padding.expand_as(first[0])).any()
    with pytest.raises(ValueError, match="exceeds"):
        next(data.batches(10_000, torch.Generator()))


def test_evaluation_batches_and_unknown_names(tmp_path):
    data = synthetic()
    seen = sum(len(labels) for _, labels in data.evaluation_batches(batch_size=64))
    assert seen == len(data.val_labels)
    with pytest.raises(DataError, match="no test split"):
        next(data.evaluation_batches("test"))
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown split 'train'"):
        next(data.evaluation_batches("train"))
    small = load_dataset("cifar10", root=write_cifar(tmp_path / "c"), validation=5, transfer=3)
    assert small.num_classes == 10 and len(small.transfer_val_labels) == 3
    with pytest.raises(ValueError, match=r"cannot hold out 5 validation and 2 x 50 transfer"):
        load_dataset("cifar10", root=tmp_path / "c", validation=5, transfer=50)
    assert load_dataset("digits", transfer=0).transfer_val_images is None


@pytest.mark.parametrize("name", ["digits", "synthetic", "cifar10"])
def test_the_splits_are_disjoint_and_cover_the_data(name):
    """Train, validation and both transfer slices partition the source's images, and the
    training images are exactly the train split's (the only images batches() reads)."""
    if name == "cifar10" and not SHARED.is_dir():
        pytest.skip(f"CIFAR-10 not found at {SHARED} (the shared test data)")
    data = load_dataset(name, root=SHARED if name == "cifar10" else None)
    parts = {split: set(index.tolist()) for split, index in data.indices.items()}
    assert set(parts) == {"train", "val", "transfer_val", "transfer_test"}
    total = sum(len(index) for index in data.indices.values())
    assert len(set().union(*parts.values())) == total  # no image in two splits
    assert set().union(*parts.values()) == set(range(total))  # none left out
    for split in ("val", "transfer_val", "transfer_test"):
        assert len(getattr(data, f"{split}_labels")) == len(parts[split])
    assert len(data.train_labels) == len(parts["train"])

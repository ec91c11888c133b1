"""One trial, in process: the order of its stages on a CPU and on CUDA (decided without a
GPU), the learning-signal stage's verdicts, and the seconds each stage took."""

import dataclasses

import pytest

from evonorm_search import LayerGraph, baselines
from evonorm_search.search import trial
from evonorm_search.search.trial import TrialRequest, compiles_first, effective_space

pytest.importorskip("triton", reason="trials compile kernels")

SPACE = """
[graph]
ops = ["add", "mul", "div", "max", "neg", "sigmoid"]
statistics = ["mean", "std"]
axes = ["batch", "instance", "group"]
[proxy]
dataset = "digits"
architectures = ["resnet"]
groups = 4
validation = 200
[training]
batch_size = 32
quality_steps = 6
steps = 10
[rejection]
quality_accuracy = 0.0
[signal]
steps = 4
window = 2
min_output_spread = 1e-3
[compile]
reference_shape = [32, 16, 8, 8]
dtype = "float32"
"""

DEAD = "max(x, 0) * 0 + x * 0"  # outputs independent of the image


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "trial.toml"
    path.write_text(SPACE)
    return str(path)


def request(space_file, graph, **options):
    return TrialRequest(
        candidate=1,
        graph=graph.to_json(),
        space=space_file,
        dataset="digits",
        data_dir=None,
        preset=None,
        seed=0,
        verify=False,
        **options,
    ).to_dict()


def test_the_compile_order_rule():
    assert compiles_first("auto", "cuda") and not compiles_first("auto", "cpu")
    assert compiles_first("first", "cpu") and compiles_first("first", "cuda")
    assert not compiles_first("after-quality", "cuda")
    with pytest.raises(ValueError, match="unknown compile order 'later'"):
        compiles_first("later", "cpu")


def test_a_cpu_trial_compiles_after_the_quality_check(space_file):
    report = trial.run_trial(request(space_file, baselines.get("bn_relu")))
    assert report["status"] == "trained"
    assert report["stages"] == ["signal", "quality", "compile", "training"]
    assert report["compiled"]["traffic_fwd"] >= 2  # every trained candidate has its figures
    assert set(report["seconds"]) == {"signal", "quality", "compile", "training"}
    assert all(v >= 0 for v in report["seconds"].values())
    assert report["signal"]["status"] == "passed" and len(report["signal"]["losses"]) == 4


def test_a_cuda_trial_compiles_first(space_file, monkeypatch):
    """The rule for a CUDA trial, without a GPU: the trial believes it runs on CUDA; its
    data stays on the CPU, where the layer runs eagerly."""
    monkeypatch.setattr(trial, "_device", lambda: "cuda")
    dataset = trial.trial_dataset.__wrapped__
    monkeypatch.setattr(
        trial,
        "trial_dataset",
        lambda name, root, validation, device: dataset(name, root, validation, "cpu"),
    )
    report = trial.run_trial(request(space_file, baselines.get("bn_relu")))
    assert report["stages"] == ["compile", "signal", "quality", "training"]
    assert report["status"] == "trained"
    forced = trial.run_trial(
        request(space_file, baselines.get("bn_relu"), compile_order="after-quality")
    )
    assert forced["stages"] == ["signal", "quality", "compile", "training"]


def test_no_kernels_for_a_layer_that_will_not_train_on_a_cpu(space_file):
    """Rejected at the signal stage, a layer is neither trained further nor compiled; with
    the stage off it is measured only, and goes on (this space passes every quality)."""
    dead = LayerGraph.parse(DEAD)
    report = trial.run_trial(request(space_file, dead))
    assert (report["status"], report["stage"]) == ("rejected", "signal")
    assert report["reason"].startswith("outputs collapsed")
    assert report["stages"] == ["signal"] and "compiled" not in report
    assert set(report["seconds"]) == {"signal"}
    measured = trial.run_trial(request(space_file, dead, signal_stage=False))
    assert measured["status"] == "trained" and measured["signal"]["status"] == "rejected"


def test_a_quality_rejection_on_a_cpu_costs_no_compile(space_file, tmp_path):
    strict = tmp_path / "strict.toml"
    strict.write_text(SPACE.replace("quality_accuracy = 0.0", "quality_accuracy = 1.0"))
    report = trial.run_trial(request(str(strict), baselines.get("bn_relu")))
    assert (report["status"], report["stage"]) == ("rejected", "quality")
    assert report["stages"] == ["signal", "quality"] and "compiled" not in report
    first = trial.run_trial(request(str(strict), baselines.get("bn_relu"), compile_order="first"))
    assert first["stages"] == ["compile", "signal", "quality"] and "compiled" in first


def test_signal_thresholds_apply_to_the_files_dataset_only(space_file):
    own = effective_space(space_file, "digits", None)
    assert own.signal.min_output_spread == 1e-3
    other = effective_space(space_file, "synthetic", None)
    assert other.signal.rejects_nothing and other.signal.steps == 4
    assert dataclasses.replace(own.signal, min_output_spread=0.0).rejects_nothing

import textwrap

import pytest
import torch

from evonorm_search import LayerGraph, baselines
from evonorm_search.proxy.data import synthetic
from evonorm_search.proxy.models import build
from evonorm_search.proxy.train import evaluate, train, train_candidate
from evonorm_search.space import load_space


@pytest.fixture(scope="module")
def data():
    return synthetic(samples=1200, validation=200)


@pytest.fixture
def space(tmp_path):
    """A small proxy task on the synthetic set: quality check after 20 steps at 30%."""
    path = tmp_path / "small.toml"
    path.write_text(
        textwrap.dedent("""
        [graph]
        ops = ["add", "mul", "div", "max", "neg", "sigmoid"]
        [proxy]
        dataset = "synthetic"
        architectures = ["resnet", "mobilenet", "efficientnet"]
        groups = 4
        validation = 200
        [training]
        batch_size = 32
        learning_rate = 0.2
        quality_steps = 20
        steps = 40
        [rejection]
        quality_accuracy = 0.3
    """)
    )
    return load_space(path)


def test_training_learns(data, space):
    result = train(baselines.get("bn_relu"), "resnet", data, space=space, seed=0)
    assert result.status == "completed" and result.steps == 40
    assert result.accuracy > 0.8 and result.quality_accuracy >= 0.3  # chance is 0.1
    assert result.loss < 1.0 and result.seconds > 0 and result.train_loss is not None


def test_a_few_steps_reduce_the_loss(data, space):
    torch.manual_seed(0)
    model = build(
        "resnet",
        lambda c: torch.nn.Sequential(torch.nn.BatchNorm2d(c), torch.nn.ReLU()),
        in_channels=1,
        image_size=8,
    )
    _, before = evaluate(model, data)
    result = train(baselines.get("gn_relu"), "resnet", data, space=space, seed=0, steps=20)
    assert result.loss < before


def test_a_broken_layer_is_rejected_at_the_checkpoint(data, space):
    # max(x, 0) * 0 + x * 0: a valid layer that passes nothing on, so the network sees a
    # constant and stays at chance.
    broken = LayerGraph.parse("max(x, 0) * 0 + x * 0")
    result = train(broken, "resnet", data, space=space, seed=0)
    assert result.status == "rejected" and result.steps == 20
    assert result.accuracy == result.quality_accuracy < 0.3


def test_a_layer_producing_inf_diverges_without_an_exception(data, space):
    result = train(LayerGraph.parse("x / v0"), "resnet", data, space=space, seed=0)  # v0 = 0
    assert result.status == "diverged" and result.steps == 0 and result.accuracy is None


def test_training_is_deterministic_for_a_seed(data, space):
    a = train(baselines.get("evonorm_s0"), "mobilenet", data, space=space, seed=3, steps=20)
    b = train(baselines.get("evonorm_s0"), "mobilenet", data, space=space, seed=3, steps=20)
    assert (a.accuracy, a.loss, a.train_loss) == (b.accuracy, b.loss, b.train_loss)
    c = train(baselines.get("evonorm_s0"), "mobilenet", data, space=space, seed=4, steps=20)
    assert c.train_loss != a.train_loss


def test_candidates_train_every_architecture_after_all_checkpoints(data, space):
    reported = []
    results = train_candidate(
        baselines.get("bn_relu"), data, space=space, seed=0, on_result=reported.append
    )
    assert list(results) == ["resnet", "mobilenet", "efficientnet"]
    assert all(r.status == "completed" and r.steps == 40 for r in results.values())
    assert [r.architecture for r in reported] == list(results)


def test_a_rejection_on_one_architecture_stops_the_candidate(data, space):
    results = train_candidate(LayerGraph.parse("max(x, 0) * 0 + x * 0"), data, space=space)
    assert list(results) == ["resnet"] and results["resnet"].status == "rejected"


def test_quality_check_stops_at_the_checkpoint(data, space):
    from evonorm_search.proxy.train import quality_check

    passed = quality_check(baselines.get("bn_relu"), "resnet", data, space=space)
    assert passed.status == "completed" and passed.steps == 20
    assert passed.accuracy == passed.quality_accuracy >= 0.3 and passed.loss is not None
    failed = quality_check(LayerGraph.parse("max(x, 0) * 0 + x * 0"), "resnet", data, space=space)
    assert failed.status == "rejected" and failed.steps == 20


def test_the_signal_stage_watches_the_first_steps_without_changing_training(data, space):
    """The signal stage is the start of the first architecture's quality check, measured:
    a candidate trained stage by stage ends exactly as one trained in one go."""
    from evonorm_search.proxy.train import CandidateTraining

    training = CandidateTraining(baselines.get("bn_relu"), data, space=space, seed=0)
    signal = training.signal()
    assert signal.status == "passed" and signal.architecture == "resnet"
    assert signal.steps == len(signal.losses) == 20  # [signal] steps, at most quality_steps
    assert signal.loss_drop > 0 and len(signal.input_gradient) == 2
    assert all(g > 0 for g in signal.input_gradient) and min(signal.output_spread) > 0.05
    assert training.quality() is None
    staged = training.finish()
    whole = train_candidate(baselines.get("bn_relu"), data, space=space, seed=0)
    assert {a: (r.accuracy, r.loss, r.train_loss) for a, r in staged.items()} == {
        a: (r.accuracy, r.loss, r.train_loss) for a, r in whole.items()
    }


def test_signal_thresholds_reject_a_dead_layer_and_pass_a_good_one(data, space):
    """``max(x, 0) * 0 + x * 0`` passes nothing on: its outputs do not depend on the image
    and no gradient reaches the input.  The defaults reject nothing; thresholds do, each
    with its reason, and a divergence is reported as one."""
    import dataclasses

    from evonorm_search.proxy.train import CandidateTraining, signal_problem

    dead = CandidateTraining(LayerGraph.parse("max(x, 0) * 0 + x * 0"), data, space=space)
    measured = dead.signal()
    assert measured.status == "passed"  # the defaults reject nothing
    assert max(measured.output_spread) < 1e-6 and max(measured.input_gradient) == 0.0
    good = CandidateTraining(baselines.get("gn_relu"), data, space=space).signal()

    def under(**thresholds):
        return dataclasses.replace(space, signal=dataclasses.replace(space.signal, **thresholds))

    collapsed = under(min_output_spread=1e-3)
    assert signal_problem(measured, collapsed).startswith("outputs collapsed: spread")
    assert signal_problem(good, collapsed) is None
    vanishing = under(min_input_gradient=1e-9)
    assert signal_problem(measured, vanishing).startswith("vanishing gradient at the input")
    assert signal_problem(good, under(max_input_gradient=1e-12)).startswith("exploding")
    assert signal_problem(good, under(min_loss_drop=100.0)).startswith("loss not falling")
    nan = dataclasses.replace(good, input_gradient=(float("nan"), 1e-5))
    assert signal_problem(nan, space).startswith("non-finite gradient or outputs")
    rejected = CandidateTraining(
        LayerGraph.parse("max(x, 0) * 0 + x * 0"), data, space=collapsed
    ).signal()
    assert rejected.status == "rejected" and rejected.reason.startswith("outputs collapsed")
    diverged = CandidateTraining(LayerGraph.parse("x / v0"), data, space=space).signal()
    assert diverged.status == "diverged" and diverged.steps == 0


@pytest.mark.parametrize("layer", ["bn_relu", "evonorm_b0"])
def test_a_run_resumes_from_its_checkpoint_bitwise(data, space, layer, tmp_path):
    """Saved mid-epoch, written to disk, loaded into a fresh run with another seed: the
    resumed run takes exactly the steps the uninterrupted one took (across an epoch)."""
    from evonorm_search.proxy.train import TrainingRun

    graph = baselines.get(layer)
    whole = TrainingRun(graph, "resnet", data, space, 3, 40)
    assert whole.advance(40)
    first = TrainingRun(graph, "resnet", data, space, 3, 40)
    assert first.advance(17)  # 25 batches of 32 per epoch of the 800 training images
    torch.save(first.state_dict(), tmp_path / "checkpoint.pt")
    resumed = TrainingRun(graph, "resnet", data, space, 99, 40)  # the state replaces the seed's
    resumed.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    assert resumed.step == 17 and resumed.advance(40)
    assert resumed.train_loss == whole.train_loss
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert evaluate(resumed.model, data) == evaluate(whole.model, data)

import textwrap
from pathlib import Path

import pytest

from evonorm_search import LayerGraph, SpaceError, baselines
from evonorm_search.space import list_spaces, load_space

MINIMAL = '[graph]\nops = ["add", "mul"]\n'


def write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_spaces():
    assert {"evonorm_b", "evonorm_s", "sequence"} <= set(list_spaces())
    b, s, seq = load_space("evonorm_b"), load_space("evonorm_s"), load_space("sequence")
    assert set(b.graph.axes) == {"batch", "instance", "group", "layer", "channel"}
    assert "batch" not in s.graph.axes and len(s.graph.axes) == 4
    assert set(seq.graph.axes) == {"channel", "layer", "instance"}
    assert seq.tensor == "sequence" and len(seq.compile.reference_shape) == 3
    assert b.compile.reference_shape == (128, 64, 56, 56) and b.compile.dtype == "bfloat16"
    assert b.graph.max_nodes == 10 and b.proxy.groups == 8
    assert b.rejection.stability == 1e8
    for space in (b, s, seq):
        assert space.description and space.path.is_file() and space.name == space.path.stem


@pytest.mark.parametrize(
    ("name", "space", "inside"),
    [
        ("evonorm_b0", "evonorm_b", True),
        ("evonorm_b0", "evonorm_s", False),
        ("evonorm_s0", "evonorm_s", True),
        ("bn_relu", "evonorm_b", True),
        ("gn_relu", "evonorm_s", True),
        ("layernorm", "sequence", True),
        ("rmsnorm", "sequence", True),
        ("dyt", "sequence", True),
        ("derf", "sequence", True),
        ("derf", "evonorm_b", False),
        ("gn_relu", "sequence", False),
    ],
)
def test_baselines_fall_in_the_spaces_they_belong_to(name, space, inside):
    assert (load_space(space).violations(baselines.get(name)) == []) == inside


def test_violations_name_every_problem_dead_nodes_included():
    space = load_space("evonorm_s")
    g = LayerGraph.from_json(
        {
            "format": "evonorm-graph/1",
            "nodes": [
                {"op": "mean", "axis": "batch", "inputs": [0]},  # dead, still outside the space
                {"op": "sigmoid", "inputs": [0]},
            ],
        }
    )
    assert space.violations(g) == ["node 4: axis 'batch' is not in this space"]
    with pytest.raises(ValueError, match="outside search space 'evonorm_s'"):
        space.check(g)
    big = LayerGraph.parse(" + ".join(["x"] * 12))
    assert "11 nodes, above this space's limit of 10" in space.violations(big)[0]


def test_path_and_defaults(tmp_path):
    space = load_space(write(tmp_path, MINIMAL))
    assert space.name == "custom" and space.graph.ops == ("add", "mul")
    assert space.tensor == "image" and space.graph.max_nodes == 10
    assert space.mutation.insert == 0.5 and space.proxy.architectures
    assert load_space(str(space.path)) == space
    narrow = load_space(write(tmp_path, MINIMAL + "statistics = []\naxes = []\n"))
    assert narrow.violations(LayerGraph.parse("x / std_group(x)")) == [
        "node 4: statistic 'std' is not in this space",
        "node 5: op 'div' is not in this space",
    ]


def test_transfer_networks_default_to_the_tensor_kind(tmp_path):
    assert load_space(write(tmp_path, MINIMAL)).transfer.networks == ("resnet20",)
    assert load_space("sequence").transfer.networks == ("vit_d4",)  # its file says so
    text = load_space("sequence").path.read_text().split("[transfer]")[0]  # without it
    sequence = load_space(write(tmp_path, text))
    assert sequence.transfer.networks == ("vit_d4",)


def test_dtype_aliases_normalise(tmp_path):
    space = load_space(write(tmp_path, MINIMAL + '[compile]\ndtype = "bf16"\n'))
    assert space.compile.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[graph\n", "not valid TOML"),
        ("description = 3\n" + MINIMAL, "description: expected str"),
        ("colour = 1\n" + MINIMAL, "unknown key 'colour'"),
        ("tensor = 'video'\n" + MINIMAL, "tensor must be one of image, sequence"),
        ("[training]\nsteps = 5\n", "missing the [graph] section"),
        ("graph = 3\n", "[graph] must be a table"),
        (MINIMAL + "max_node = 3\n", "[graph]: unknown key 'max_node'"),
        (MINIMAL + "max_nodes = 'ten'\n", "[graph] max_nodes: expected int, got 'ten'"),
        (MINIMAL + "max_nodes = true\n", "expected int, got True"),
        (MINIMAL + "max_nodes = 0\n", "max_nodes must be >= 1"),
        ('[graph]\nops = ["add", "cos"]\n', "unknown op 'cos'"),
        ('[graph]\nops = "add"\n', "expected a list"),
        ("[graph]\nops = []\n", "at least one op"),
        (MINIMAL + 'axes = ["time"]\n', "unknown axis 'time'"),
        (MINIMAL + 'statistics = ["var"]\n', "unknown statistic 'var'"),
        (MINIMAL + "axes = []\n", "both be empty or both be non-empty"),
        (MINIMAL + "[mutation]\ninsert = -1\n", "weights must be >= 0"),
        (MINIMAL + "[proxy]\narchitectures = ['vgg']\n", "unknown proxy architecture 'vgg'"),
        (MINIMAL + "[proxy]\ndataset = 'imagenet'\n", "dataset must be one of"),
        (MINIMAL + "[proxy]\npreset = 'huge'\n", "preset must be one of"),
        (MINIMAL + "[training]\nquality_steps = 500\nsteps = 100\n", "must not exceed steps"),
        (MINIMAL + "[training]\nlearning_rate = 0\n", "learning_rate must be > 0"),
        (MINIMAL + "[rejection]\nquality_accuracy = 1.5\n", "quality_accuracy must be in [0, 1]"),
        (MINIMAL + "[search]\npopulation = 4\ntournament = 8\n", "tournament <= population"),
        (MINIMAL + "[compile]\nreference_shape = [1, 2, 3]\n", "must be 4 positive sizes"),
        (MINIMAL + "[compile]\ndtype = 'int8'\n", "dtype must be one of"),
        (MINIMAL + "[compile]\nreference_shape = [128, 0, 56, 56]\n", "4 positive sizes"),
        (MINIMAL + "[compile]\ntarget = 'sm_0'\n", "target must look like sm_90a"),
        (MINIMAL + "[proxy]\ngroups = 0\n", "groups must be >= 1"),
        (MINIMAL + "[proxy]\narchitectures = ['vit']\n", "vit takes sequence tensors"),
        (
            "tensor = 'sequence'\n" + MINIMAL + "[proxy]\narchitectures = ['resnet']\n",
            "resnet takes image tensors",
        ),
        (MINIMAL + "[proxy]\narchitectures = ['resnet', 'resnet']\n", "lists an entry twice"),
        ('[graph]\nops = ["add", "add"]\n', "lists an entry twice"),
        (MINIMAL + "[training]\nbatch_size = 0\n", "batch_size, quality_steps and steps"),
        (MINIMAL + "[training]\nlearning_rate = inf\n", "expected float, got inf"),
        (MINIMAL + "[mutation]\nchange_op = nan\n", "expected float, got nan"),
        (MINIMAL + "[rejection]\nstability = 0\n", "stability must be > 0"),
        (MINIMAL + "[search]\ninitial_mutants = 1.5\n", "initial_mutants must be in [0, 1]"),
        (MINIMAL + "[search]\nstart_after = -1\n", "start_after must be >= 0"),
        (MINIMAL + "[transfer]\nnetworks = ['vgg']\n", "unknown transfer network 'vgg'"),
        (MINIMAL + "[transfer]\nnetworks = ['vit_d4']\n", "vit_d4 takes sequence tensors"),
        (MINIMAL + "[transfer]\nsteps = 0\n", "steps, batch_size, eval_every and seeds"),
        (MINIMAL + "[transfer]\nlearning_rates = [0.1, 0]\n", "learning rates must be > 0"),
        (MINIMAL + "[transfer]\ncheckpoint_minutes = 0\n", "checkpoint_minutes must be > 0"),
        (MINIMAL + "[signal]\nsteps = 1\n", "[signal] needs steps >= 2 and window >= 1"),
        (
            MINIMAL + "[signal]\nmin_input_gradient = 1.0\nmax_input_gradient = 0.1\n",
            "min_input_gradient must not exceed max_input_gradient",
        ),
        (MINIMAL + "[signal]\nmin_loss = 0.1\n", "[signal]: unknown key 'min_loss'"),
    ],
)
def test_schema_errors_name_the_file_and_the_problem(tmp_path, text, message):
    with pytest.raises(SpaceError) as info:
        load_space(write(tmp_path, text, "bad.toml"))
    assert message in str(info.value)
    assert str(info.value).startswith("bad.toml")


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(SpaceError, match=r"unknown search space 'nope' \(available: evonorm_b"):
        load_space("nope")
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "missing.toml")
    with pytest.raises(SpaceError, match="is not a file"):
        load_space(tmp_path)
    with pytest.raises(SpaceError, match=r"give its name: evonorm_b\)"):
        load_space("evonorm_b.toml")  # a path relative to the working directory
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpaceError, match="not valid TOML"):
        load_space(tmp_path / "binary.toml")

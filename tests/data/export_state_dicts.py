"""Write ``export_state_dicts.pt``: every zoo layer exported by the code checked out on
``PYTHONPATH``, trained three steps, then its state dict and an eval-mode input and output.

The stored file was written by 7c30a62, the last commit before the eager runtime and the
export rewrite (issue 24); ``tests/test_export.py`` loads it into today's exports:

    git worktree add /tmp/pre 7c30a62
    PYTHONPATH=/tmp/pre python tests/data/export_state_dicts.py tests/data/export_state_dicts.pt
"""

import subprocess
import sys
from pathlib import Path

import torch

from evonorm_search import baselines
from evonorm_search.export import export_source

SHAPES = {"image": (4, 8, 3, 5), "any": (4, 8, 3, 5), "sequence": (3, 8, 6)}


def main(out: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    cases = {}
    for name in baselines.names():
        shape = SHAPES[baselines.describe(name).tensor]
        namespace: dict = {"__name__": f"exported_{name}"}
        exec(compile(export_source(baselines.get(name), "Exported"), name, "exec"), namespace)
        layer = namespace["Exported"](shape[1], groups=4, momentum=0.2)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.randn(p.shape, generator=generator), alpha=0.3)
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        for step in range(3):
            x = torch.randn(shape, generator=generator) * 1.5 + step
            optimizer.zero_grad()
            layer(x).square().mean().backward()
            optimizer.step()
        layer.eval()
        eval_x = torch.randn(shape, generator=generator) + 0.5
        with torch.no_grad():
            eval_y = layer(eval_x)
        cases[name] = {
            "state": layer.state_dict(),
            "eval_x": eval_x,
            "eval_y": eval_y,
            "groups": layer.groups,
        }
    commit = subprocess.run(
        ["git", "-C", str(Path(baselines.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    torch.save({"commit": commit, "cases": cases}, out)
    print(f"{len(cases)} zoo layers from {commit} -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

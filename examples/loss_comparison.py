"""Compare every MF loss (biased vs debiased, InfoNCE vs MINE+) at d = 64.

A thin wrapper of :mod:`linrec.reproduce` (the ``linrec reproduce`` command); its docstring
documents the protocol, the grids and the outputs. Usage::

    python examples/loss_comparison.py                      # synthetic data, about a minute
    python examples/loss_comparison.py --data ../shared/data/gowalla ../shared/data/yelp2018 \\
        --grid small --epochs 20 --out out/loss_comparison
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# numba's OpenMP threads spin between the short per-batch parallel regions by default; on a
# shared machine that costs several times the work itself. Must be set before numba starts
# its threads.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linrec.reproduce import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

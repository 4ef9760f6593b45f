"""``kinema bench NAME``: run a benchmark of the source checkout (``benchmarks/bench_NAME.py``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kinema.errors import KinemaError

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"  # src/kinema/cli/bench.py -> the checkout


def bench(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="world, vae, train, dit, pipeline, long, startup, fewstep or stepcache "
                                             "(benchmarks/bench_NAME.py).")],
) -> None:
    """Run a benchmark from the source checkout; it prints JSON lines (extra flags are passed through)."""
    import runpy

    script = BENCHMARKS / f"bench_{name}.py"
    if not script.is_file():
        available = sorted(p.stem.removeprefix("bench_") for p in BENCHMARKS.glob("bench_*.py"))
        raise KinemaError(f"no benchmark '{name}' (available: {', '.join(available) or 'none; run from a checkout'})")
    argv = [a for a in ctx.args if a != "--json"]  # every benchmark prints JSON lines
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved

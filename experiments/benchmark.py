"""Performance benchmark: the fine-tune (SAC) and pretraining (CQL) updates against references
written the common way, the Cal-QL update against d3rlpy's (installed by the Makefile), the
Lightning loop's overhead, rollout throughput, world-model epoch time, peak memory,
buffer-size scaling and the PointMaze study cell end to end (before / after; the longest
section, ~20 min on 2 loaded cores, ~5 with --quick). Contenders of one section are timed in
interleaved blocks in this process, so their ratios compare like with like; peak memory, the
glibc-allocator rate, first compiles and study cells are measured in fresh processes. Prints
a table and writes JSON.

    python experiments/benchmark.py [--quick] [--out benchmark.json] [--device cuda]
                                    [--sections sac,cql,peer,...]

--quick (a few minutes on 2 cores) shrinks iteration counts and skips torch.compile.
"""

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path

import torch

from wsrl_wm.benchmark import Figure, run_suite
from wsrl_wm.benchmark.suite import SECTIONS
from wsrl_wm.provenance import provenance


def table(figures: list[Figure]) -> str:
    lines, section = [], None
    for figure in figures:
        if figure.section != section:
            section = figure.section
            lines += ["", f"{section}"]
        if math.isnan(figure.value):  # a note: the section did not run
            lines.append(f"  {figure.name}")
            continue
        value = f"{figure.value:,.3g}" if abs(figure.value) < 1000 else f"{figure.value:,.0f}"
        target = f"   (target {figure.target})" if figure.target else ""
        lines.append(f"  {figure.name:<42} {value:>12} {figure.unit}{target}")
    return "\n".join(lines)


def write_json(path: Path, figures: list[Figure]) -> None:
    """Atomically: a killed run leaves the previous file, not half of one."""
    result = {**provenance(),  # code commit, CPU, torch, threads
              "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "figures": [{**dataclasses.asdict(f), "value": None if math.isnan(f.value)
                           else f.value} for f in figures]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: fewer iterations, no torch.compile")
    parser.add_argument("--out", type=Path, default=Path("benchmark.json"), help="JSON results")
    parser.add_argument("--device", default="cpu",
                        help="where the SAC, CQL and peer update sections run (e.g. cuda)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {','.join(SECTIONS)} (default: all)")
    args = parser.parse_args()
    sections = tuple(args.sections.split(","))
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {','.join(SECTIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    figures = run_suite(quick=args.quick, device=args.device, sections=sections)
    print(table(figures))
    write_json(args.out, figures)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

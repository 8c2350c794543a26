"""Per-run overhead in one process: several short runs, each one's seconds as recorded.

    python benchmarks/run_overhead.py [--runs 4]

Needs the smoke data and tiny model (``make book PROFILE=smoke`` builds both). Every run
records ``seconds: {total, training, evaluation, overhead}`` and ``setup_seconds`` in its
``metrics.json``; this prints them for ``--runs`` one-epoch VPT-shallow runs in one process.
"""

from __future__ import annotations

import argparse
import tempfile

from vptlib.runs.engine import RunConfig, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--data", default="data/smoke")
    p.add_argument("--model", default="models/tiny-clip")
    args = p.parse_args()
    out = tempfile.mkdtemp(prefix="overhead-")
    for seed in range(args.runs):
        cfg = RunConfig(method="vpt_shallow", data=args.data, model=args.model, epochs=1, seed=seed, device="cpu",
                        precision="fp32", batch_size=16, out=out, profile="overhead")  # fmt: skip
        m = run(cfg, progress=False).metrics
        print(seed, {k: round(v, 2) for k, v in m["seconds"].items()}, "setup", round(m["setup_seconds"], 2))


if __name__ == "__main__":
    main()

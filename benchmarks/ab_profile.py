"""Profiling throughput of two engine versions on benchmark models, alternating processes.

    git archive <commit> src | tar -x -C /tmp/eng_old
    python benchmarks/ab_profile.py /tmp/eng_old/src src --models lenet5,vit --pairs 2

Each process builds one model of ``run.py`` (random weights), then, for ``--rounds`` rounds,
times plain inference over the model's benchmark samples (batches of 16, ``run.py``'s
``PROFILE_SAMPLES``) followed by ``slicer.profile`` of the same batches, unlabelled and with
uniform random labels, 2 torch threads. A round's ratio is inference ÷ profile time (1.0:
profiling is as fast as inference); the process reports the median over rounds. The trees run
old, new, old, new…, so both see the same machine drift.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CASE = r'''
import json, statistics, sys, time
sys.path.insert(0, SRC)
sys.path.insert(0, HERE)
import torch
import nnslicer
import run
torch.set_num_threads(2)
model, shape = run.build(MODEL)
n = run.PROFILE_SAMPLES[MODEL]
batches = list(run.inputs(n, shape).split(run.PROFILE_BATCH))
with torch.no_grad():
    classes = model(batches[0]).shape[1]
g = torch.Generator().manual_seed(run.INPUT_SEED)
labelled = [(b, torch.randint(0, classes, (len(b),), generator=g)) for b in batches]
slicer = nnslicer.Slicer(model, theta=run.THETA, batch_size=run.PROFILE_BATCH, progress=False)
slicer.profile(batches[:2])

def infer():
    with torch.no_grad():
        for b in batches:
            model(b)

def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start

ratios = {"unlabelled": [], "labelled": []}
for _ in range(ROUNDS):
    for kind, data in (("unlabelled", batches), ("labelled", labelled)):
        t_infer = seconds(infer)
        ratios[kind].append(t_infer / seconds(lambda: slicer.profile(data)))
print(json.dumps({k: statistics.median(v) for k, v in ratios.items()}))
'''


def run_case(src: str, model: str, rounds: int) -> dict[str, float]:
    code = (CASE.replace("SRC", repr(str(Path(src).resolve())))
            .replace("HERE", repr(str(HERE))).replace("MODEL", repr(model))
            .replace("ROUNDS", str(rounds)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="src directory of the first engine")
    parser.add_argument("new", help="src directory of the second engine")
    parser.add_argument("--models", default="lenet5,resnet10,mobilenetv2,vit")
    parser.add_argument("--pairs", type=int, default=2, help="old/new process pairs per model")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per process")
    args = parser.parse_args()
    print("| model | engine | inference ÷ profile, unlabelled | labelled |")
    print("|---|---|---|---|")
    for model in args.models.split(","):
        got: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for _ in range(args.pairs):
            for which in ("old", "new"):
                got[which].append(run_case(getattr(args, which), model, args.rounds))
        for which, rows in got.items():
            cells = [", ".join(f"{r[k]:.2f}" for r in rows) for k in ("unlabelled", "labelled")]
            print(f"| {model} | {which} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()

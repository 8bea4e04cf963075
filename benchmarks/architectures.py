"""Slicing cost of the architecture suite (``tests/architectures``) relative to inference.

For every suite entry, in a fresh subprocess (so peak RSS is that entry's own), with one torch
thread (``torch.set_num_threads(1)``) and one numba thread (``nnslicer.backward.kernels.
set_threads(1)``, when the engine has it): build the model with random weights (seed 0), profile
it on ``--profile-batches`` random batches of 8, then, on one batch of 8 samples, run one
warm-up forward and one warm-up slice and measure ``--repeats`` rounds of

    inference (plain ``model(x)`` under ``torch.no_grad()``, repeated until it has run for at
    least ``--min-time`` seconds) followed by one ``slicer.slice(x)``,

alternating the two so that machine drift hits both alike. Reported per sample: the median
inference seconds, the median slice seconds, the median of the per-round slice/inference
ratios, and the child's peak RSS. An entry the engine refuses gets a row with its error.

    python benchmarks/architectures.py                       # every entry, markdown table
    python benchmarks/architectures.py --only resnet18 gru --out /tmp/arch.json
    python benchmarks/architectures.py --quiet --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
BATCH = 8
WEIGHT_SEED, PROFILE_SEED, INPUT_SEED = 0, 100, 7


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss is in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ===================================================================== child: one entry
def measure(name: str, repeats: int, min_time: float, profile_batches: int) -> dict[str, Any]:
    """Time inference and slicing of one suite entry in this process."""
    import torch

    torch.set_num_threads(1)
    numba_threads = "n/a"
    try:
        from nnslicer.backward.kernels import set_threads
    except ImportError:
        pass
    else:
        set_threads(1)
        numba_threads = "1"
    import nnslicer

    sys.path.insert(0, str(TESTS))
    from architectures import SUITE

    entry = SUITE[name]
    row: dict[str, Any] = {"name": name, "origin": entry.origin, "ok": False, "error": None,
                           "numba_threads": numba_threads, "engine": nnslicer.__file__}
    model = entry.model(WEIGHT_SEED)
    x = entry.inputs(BATCH, INPUT_SEED)
    stage = "trace"
    try:
        slicer = nnslicer.Slicer(model)
        stage = "profile"
        slicer.profile([entry.inputs(BATCH, PROFILE_SEED + i) for i in range(profile_batches)])
        stage = "slice"
        with torch.no_grad():
            model(x)
        slicer.slice(x)  # warm-up: numba compilation / cache load, allocator
        infer, sliced, ratios = [], [], []
        for _ in range(repeats):
            calls, start = 0, time.perf_counter()
            with torch.no_grad():
                while True:
                    model(x)
                    calls += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= min_time:
                        break
            t_infer = elapsed / calls / BATCH
            start = time.perf_counter()
            slicer.slice(x)
            t_slice = (time.perf_counter() - start) / BATCH
            infer.append(t_infer)
            sliced.append(t_slice)
            ratios.append(t_slice / t_infer)
    except Exception as exc:  # noqa: BLE001 - a refused entry is a result, not a crash
        row["error"] = f"{stage}: {one_line(exc)}"
        row["rss_peak_mb"] = rss_mb()
        return row
    row.update(ok=True, infer_s_per_sample=statistics.median(infer),
               slice_s_per_sample=statistics.median(sliced), ratio=statistics.median(ratios),
               ratio_min=min(ratios), ratio_max=max(ratios), repeats=repeats,
               rss_peak_mb=rss_mb())
    return row


# ==================================================================== parent: the table
def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name,
           "--repeats", str(args.repeats), "--min-time", str(args.min_time),
           "--profile-batches", str(args.profile_batches)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "ok": False, "error": f"timeout after {args.timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"name": name, "ok": False, "error": f"child exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| entry | inference ms/sample | slice ms/sample | slice / inference | peak RSS MB "
           "| result |",
           "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        rss = f"{r['rss_peak_mb']:.0f}" if "rss_peak_mb" in r else ""
        if r["ok"]:
            out.append(f"| {r['name']} | {r['infer_s_per_sample'] * 1e3:.3f} | "
                       f"{r['slice_s_per_sample'] * 1e3:.1f} | {r['ratio']:.0f}× "
                       f"({r['ratio_min']:.0f}–{r['ratio_max']:.0f}) | {rss} | ok |")
        else:
            error = str(r["error"])
            error = (error[:157] + "...") if len(error) > 160 else error
            error = error.replace("|", "\\|")
            out.append(f"| {r['name']} |  |  |  | {rss} | {error} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="suite entries to run")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--repeats", type=int, default=5, help="measurement rounds per entry")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="seconds of repeated inference per round")
    parser.add_argument("--profile-batches", type=int, default=4,
                        help="random batches of 8 to profile on")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per entry")
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(measure(args.child, args.repeats, args.min_time,
                                 args.profile_batches)))
        return 0

    sys.path.insert(0, str(TESTS))
    from architectures import SUITE

    names = args.only or list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        parser.error(f"unknown suite entries {unknown}; known: {', '.join(SUITE)}")
    rows = []
    for name in names:
        row = run_child(name, args)
        rows.append(row)
        if not args.quiet:
            state = (f"{row['ratio']:.0f}× inference" if row["ok"] else row["error"])
            print(f"{name}: {state}", file=sys.stderr, flush=True)
    if not args.quiet:
        print(table(rows))
        done = sum(r["ok"] for r in rows)
        print(f"\n{done} of {len(rows)} entries sliced; batch {BATCH}, 1 torch thread, "
              f"median of {args.repeats} alternating rounds")
    if args.out:
        import torch

        meta = {"python": platform.python_version(), "torch": torch.__version__,
                "machine": platform.machine(), "cpus": os.cpu_count(), "batch": BATCH,
                "repeats": args.repeats, "min_time_s": args.min_time,
                "profile_batches": args.profile_batches, "torch_threads": 1}
        args.out.write_text(json.dumps({"settings": meta, "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

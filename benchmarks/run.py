"""nnslicer benchmark: slicing and profiling cost of the zoo models (``make bench``).

Every measurement runs in a fresh subprocess (so peak RSS is that case's own), with
``torch.set_num_threads(2)`` (``--threads``), θ = 0.2, weights initialised randomly with
``torch.manual_seed(0)`` and inputs drawn uniformly from [0, 1) with a fixed seed: the profile is
computed on random inputs (unlabelled, and with uniform random labels). Each case is warmed up,
then timed ``--repeats`` times; the median is reported. A case whose single call would exceed
``--budget`` seconds is measured on fewer samples / repetitions, and the table says so.

    python benchmarks/run.py                      # everything, writes benchmarks/results.json
    python benchmarks/run.py --quick --cases lenet5
    python benchmarks/run.py --cases resnet10 --no-ray --out /tmp/r.json

Cases: ``lenet5`` (1×28×28), ``resnet10`` and ``resnet18`` (CIFAR-style, 3×32×32, width 64, i.e.
64–512 channels), ``mobilenetv2`` and ``mobilenetv2-se`` (CIFAR-style, 3×32×32, the standard
channel counts; -se: squeeze-excitation in every inverted residual), ``vit`` (3×32×32, patch 4,
dim 64, 4 blocks), ``lstm`` (MNIST rows: 28 steps of 28, hidden 64), ``resnet50`` and ``vit-s16``
(3×224×224, 1 000 classes: ImageNet scale; the profile keeps no class table, which would not
fit). Ray 1 vs 2 workers runs on ResNet-10 when resnet10 is among the cases and Ray is installed
(``--no-ray`` skips it).
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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS: dict[str, dict[str, Any]] = {
    "lenet5": {"arch": "lenet5", "shape": (1, 28, 28),
               "kwargs": {"in_channels": 1, "num_classes": 10, "input_size": 28}},
    "resnet10": {"arch": "resnet10", "shape": (3, 32, 32),
                 "kwargs": {"in_channels": 3, "num_classes": 10, "width": 64}},
    "resnet18": {"arch": "resnet18", "shape": (3, 32, 32),
                 "kwargs": {"in_channels": 3, "num_classes": 10, "width": 64}},
    "mobilenetv2": {"arch": "mobilenetv2", "shape": (3, 32, 32),
                    "kwargs": {"in_channels": 3, "num_classes": 10, "width": 32}},
    "mobilenetv2-se": {"arch": "mobilenetv2-se", "shape": (3, 32, 32),
                       "kwargs": {"in_channels": 3, "num_classes": 10, "width": 32}},
    "vit": {"arch": "vit", "shape": (3, 32, 32),
            "kwargs": {"in_channels": 3, "num_classes": 10, "input_size": 32}},
    "lstm": {"arch": "lstm", "shape": (1, 28, 28),
             "kwargs": {"in_channels": 1, "num_classes": 10, "input_size": 28}},
    "resnet50": {"arch": "resnet50", "shape": (3, 224, 224),
                 "kwargs": {"in_channels": 3, "num_classes": 1000, "width": 64}},
    "vit-s16": {"arch": "vit-s16", "shape": (3, 224, 224),
                "kwargs": {"in_channels": 3, "num_classes": 1000, "input_size": 224}},
}
THETA = 0.2
BATCHES = (1, 16)
PROFILE_BATCH = 16
# enough samples that per-call costs (allocating the float64 sums, hashing the weights) are
# amortised as they are over a training set
PROFILE_SAMPLES = {"lenet5": 1024, "resnet10": 256, "resnet18": 256, "mobilenetv2": 256,
                   "mobilenetv2-se": 256, "vit": 256, "lstm": 256, "resnet50": 32, "vit-s16": 32}
RAY_SHARD = 4  # samples per Ray task (and the workers' slicer batch size)
WEIGHT_SEED, INPUT_SEED = 0, 1


# ================================================================ child side (one case each)
def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss is in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def build(name: str) -> tuple[Any, tuple[int, ...]]:
    import torch

    from nnslicer.models.zoo import build_model

    spec = MODELS[name]
    torch.manual_seed(WEIGHT_SEED)
    return build_model(spec["arch"], **spec["kwargs"]).eval(), spec["shape"]


def inputs(n: int, shape: tuple[int, ...], seed: int = INPUT_SEED) -> Any:
    import torch

    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def inference_seconds(model: Any, x: Any, min_seconds: float = 1.0, min_reps: int = 5) -> float:
    """Median wall seconds per sample of ``model(x)`` under no_grad."""
    import torch

    with torch.no_grad():
        model(x)  # warm-up
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_reps or time.perf_counter() - start < min_seconds:
            times.append(timed(lambda: model(x))[0])
            if len(times) >= 1000:
                break
    return statistics.median(times) / x.shape[0]


def child_profile(job: dict[str, Any]) -> dict[str, Any]:
    """Inference and profiling throughput of one model; saves the profile for the slice cases."""
    import torch

    import nnslicer

    model, shape = build(job["model"])
    base = rss_mb()
    n = job["profile_samples"]
    x = inputs(n, shape)
    batches = list(x.split(PROFILE_BATCH))
    slicer = nnslicer.Slicer(model, theta=THETA, batch_size=PROFILE_BATCH)

    def infer_all() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    infer_all()  # warm-up
    # labelled data as from a shuffled training set: uniform random labels (the predictions of a
    # random model are mostly one class, which would make every batch a single run of a class)
    with torch.no_grad():
        num_classes = model(batches[0]).shape[1]
    g = torch.Generator().manual_seed(INPUT_SEED)
    labelled = [(b, torch.randint(0, num_classes, (len(b),), generator=g)) for b in batches]
    warm, _ = timed(lambda: slicer.profile(batches[:1]))
    reps = max(1, min(job["repeats"], int(job["budget"] // max(2 * warm * len(batches), 1e-9))))
    # inference and profiling of the same batches alternate, so all see the same machine state
    infers, runs, runs_labelled = [], [], []
    for _ in range(reps):
        infers.append(timed(infer_all)[0])
        runs.append(timed(lambda: slicer.profile(batches)))
        runs_labelled.append(timed(lambda: slicer.profile(labelled))[0])
    infer = statistics.median(infers) / n
    slicer.current_profile.save(job["profile_path"])
    wall = statistics.median(r[0] for r in runs) / n
    cpu = statistics.median(r[1] for r in runs) / n
    wall_labelled = statistics.median(runs_labelled) / n
    return {
        "model": job["model"], "batch": PROFILE_BATCH, "samples": n, "reps": reps,
        "infer_s_per_sample": infer, "profile_s_per_sample": wall,
        "profile_cpu_s_per_sample": cpu,
        "throughput_ratio": infer / wall,  # profiling samples/s over inference samples/s
        "labelled_profile_s_per_sample": wall_labelled,
        "labelled_throughput_ratio": infer / wall_labelled,
        "rss_base_mb": base, "rss_peak_mb": rss_mb(),
    }


def child_slice(job: dict[str, Any]) -> dict[str, Any]:
    """Seconds per sample of slicer.slice at one batch size."""
    import nnslicer

    model, shape = build(job["model"])
    batch, budget = job["batch"], job["budget"]
    x = inputs(batch, shape, seed=INPUT_SEED + 1)
    infer = inference_seconds(model, x)
    slicer = nnslicer.Slicer(model, theta=THETA, batch_size=batch)
    slicer.use_profile(job["profile_path"])
    base = rss_mb()
    # warm-up on one sample; it also estimates the cost of a sample
    one, _ = timed(lambda: slicer.slice(x[:1]))
    samples = batch
    if batch > 1 and one * batch > budget:
        samples = max(1, int(budget // one))
    xs = x[:samples]
    call = one * samples
    reps = max(1, min(job["repeats"], int(budget // max(call, 1e-9))))
    if samples > 1 and call * (reps + 1) <= budget:
        slicer.slice(xs)  # a full-batch warm-up too when it is affordable
    runs = [timed(lambda: slicer.slice(xs)) for _ in range(reps)]
    walls = [r[0] / samples for r in runs]
    return {
        "model": job["model"], "batch": batch, "samples": samples, "reduced": samples < batch,
        "reps": reps, "s_per_sample": statistics.median(walls), "all_s_per_sample": walls,
        "cpu_s_per_sample": statistics.median(r[1] for r in runs) / samples,
        "warmup_s_per_sample": one,
        "infer_s_per_sample": infer, "slowdown": statistics.median(walls) / infer,
        "rss_base_mb": base, "rss_peak_mb": rss_mb(),
    }


def child_ray(job: dict[str, Any]) -> dict[str, Any]:
    """ResNet-10 slicing throughput with 1 and 2 Ray workers (one torch thread each)."""
    import ray

    import nnslicer
    from nnslicer.parallel import RayPool

    model, shape = build(job["model"])
    shard = RAY_SHARD
    slicer = nnslicer.Slicer(model, theta=THETA, batch_size=shard)
    slicer.use_profile(job["profile_path"])
    n = job["samples"]
    x = inputs(n, shape, seed=INPUT_SEED + 2)
    ray.init(num_cpus=max(job["workers"]), include_dashboard=False,
             logging_level="warning", log_to_driver=False)
    rows = []
    try:
        for workers in job["workers"]:
            start = time.perf_counter()
            with RayPool(slicer, num_workers=workers) as pool:
                pool.workers()  # actors up, slicers built
                startup = time.perf_counter() - start
                pool.slice(x[:workers * shard], shard_size=shard)  # warm-up: a shard per worker
                wall, _ = timed(lambda pool=pool: pool.slice(x, shard_size=shard))
            rows.append({"model": job["model"], "workers": workers, "samples": n,
                         "startup_s": startup, "seconds": wall, "samples_per_s": n / wall})
    finally:
        ray.shutdown()
    for row in rows:
        row["speedup"] = row["samples_per_s"] / rows[0]["samples_per_s"]
    return {"rows": rows, "rss_peak_mb_driver": rss_mb()}


CHILDREN = {"profile": child_profile, "slice": child_slice, "ray": child_ray}


def run_child(job: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    load_start = os.getloadavg()[0]
    result = CHILDREN[job["kind"]](job)
    result["load_1min"] = [load_start, os.getloadavg()[0]]
    Path(job["result_path"]).write_text(json.dumps(result))


# =================================================================== parent side (driver)
def spawn(job: dict[str, Any], tmp: Path, say: Callable[[str], None]) -> dict[str, Any]:
    result_path = tmp / f"result-{time.monotonic_ns()}.json"
    job = dict(job, result_path=str(result_path))
    desc = " ".join(f"{k}={job[k]}" for k in ("kind", "model", "batch", "workers") if k in job)
    say(f"[dim]running {desc} …[/]")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                           json.dumps(job)], stdout=subprocess.DEVNULL)
    if proc.returncode != 0 or not result_path.exists():
        raise SystemExit(f"benchmark case {desc} failed (exit {proc.returncode})")
    say(f"[dim]  done in {time.perf_counter() - start:.1f} s[/]")
    return json.loads(result_path.read_text())


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import nnslicer

    src = Path(nnslicer.__file__).resolve().parent
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", str(src)], cwd=src,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "nnslicer_source": str(src), "git_commit": commit, "git_dirty_src": dirty,
        "threads": args.threads, "theta": THETA, "quick": args.quick, "budget_s": args.budget,
        "repeats": args.repeats, "weights": f"random init, torch.manual_seed({WEIGHT_SEED})",
        "inputs": f"uniform [0, 1), seed {INPUT_SEED}; profile on random inputs, unlabelled "
                  "(class = prediction) and with uniform random labels",
        "load_1min_at_start": os.getloadavg()[0],
        "label": args.label,
    }


def fmt_s(v: float) -> str:
    if v >= 1:
        return f"{v:.2f} s"
    if v >= 1e-3:
        return f"{v * 1e3:.2f} ms"
    return f"{v * 1e6:.1f} µs"


def load(row: dict[str, Any]) -> str:
    """1-minute load average at the start and end of a case (the machine has os.cpu_count())."""
    a, b = row.get("load_1min", (0.0, 0.0))
    return f"{a:.1f}→{b:.1f}"


def render(results: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    t = Table(title="slice: seconds per sample (median)")
    for col in ("model", "batch", "samples×reps", "slice s/sample", "CPU s/sample",
                "inference s/sample", "slice / inference", "peak RSS", "load"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in results["slicing"]:
        note = "*" if r["reduced"] else ""
        t.add_row(r["model"], str(r["batch"]), f"{r['samples']}{note}×{r['reps']}",
                  fmt_s(r["s_per_sample"]), fmt_s(r["cpu_s_per_sample"]),
                  fmt_s(r["infer_s_per_sample"]), f"{r['slowdown']:,.0f}×",
                  f"{r['rss_peak_mb']:.0f} MiB", load(r))
    console.print(t)
    console.print(f"load: 1-minute load average at the start→end of each case "
                  f"({results['environment']['cpus']} CPUs)")
    if any(r["reduced"] for r in results["slicing"]):
        console.print("* fewer samples than the batch size: one call would exceed the budget")

    t = Table(title=f"profile: throughput vs plain inference (batch {PROFILE_BATCH})")
    for col in ("model", "samples×reps", "inference s/sample", "profile s/sample",
                "profile / inference throughput", "labelled: profile s/sample",
                "labelled: ratio", "peak RSS", "load"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in results["profiling"]:
        t.add_row(r["model"], f"{r['samples']}×{r['reps']}", fmt_s(r["infer_s_per_sample"]),
                  fmt_s(r["profile_s_per_sample"]), f"{r['throughput_ratio']:.4f}",
                  *_labelled(r, 4), f"{r['rss_peak_mb']:.0f} MiB", load(r))
    console.print(t)

    if results.get("ray"):
        t = Table(title="Ray: slice throughput, 1 vs 2 workers (1 torch thread each)")
        for col in ("model", "workers", "samples", "actor startup", "slice time", "samples/s",
                    "speedup", "load"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for r in results["ray"]:
            t.add_row(r["model"], str(r["workers"]), str(r["samples"]), fmt_s(r["startup_s"]),
                      fmt_s(r["seconds"]), f"{r['samples_per_s']:.4f}", f"{r['speedup']:.2f}×",
                      load(r))
        console.print(t)


def _labelled(r: dict[str, Any], digits: int) -> tuple[str, str]:
    """Labelled-profiling cells (absent in results written before they were measured)."""
    if "labelled_profile_s_per_sample" not in r:
        return "—", "—"
    return fmt_s(r["labelled_profile_s_per_sample"]), f"{r['labelled_throughput_ratio']:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (for benchmarks/NOTES.md)."""
    env = results["environment"]
    lines = [f"Run {env['date']}, {env.get('label') or 'nnslicer ' + str(env['git_commit'])}; "
             f"torch {env['torch']}, {env['cpus']} CPUs, {env['threads']} torch threads, "
             f"θ = {env['theta']}, budget {env['budget_s']:.0f} s per case.", "",
             "| model | batch | samples×reps | slice s/sample | CPU s/sample | inference s/sample "
             "| slice / inference | peak RSS | load |", "|" + "---|" * 9]
    for r in results["slicing"]:
        star = "*" if r["reduced"] else ""
        lines.append(f"| {r['model']} | {r['batch']} | {r['samples']}{star}×{r['reps']} | "
                     f"{fmt_s(r['s_per_sample'])} | {fmt_s(r['cpu_s_per_sample'])} | "
                     f"{fmt_s(r['infer_s_per_sample'])} | {r['slowdown']:,.0f}× | "
                     f"{r['rss_peak_mb']:.0f} MiB | {load(r)} |")
    lines += ["", f"| model | samples×reps | inference s/sample (batch {PROFILE_BATCH}) | "
              "profile s/sample | profile / inference throughput | labelled: profile s/sample | "
              "labelled: ratio | peak RSS | load |", "|" + "---|" * 9]
    for r in results["profiling"]:
        lab_s, lab_ratio = _labelled(r, 3)
        lines.append(f"| {r['model']} | {r['samples']}×{r['reps']} | "
                     f"{fmt_s(r['infer_s_per_sample'])} | {fmt_s(r['profile_s_per_sample'])} | "
                     f"{r['throughput_ratio']:.3f} | {lab_s} | {lab_ratio} | "
                     f"{r['rss_peak_mb']:.0f} MiB | {load(r)} |")
    if results.get("ray"):
        lines += ["", "| model | Ray workers | samples | actor startup | slice time | samples/s | "
                  "speedup | load |", "|" + "---|" * 8]
        for r in results["ray"]:
            lines.append(f"| {r['model']} | {r['workers']} | {r['samples']} | "
                         f"{fmt_s(r['startup_s'])} | {fmt_s(r['seconds'])} | "
                         f"{r['samples_per_s']:.4f} | {r['speedup']:.2f}× | {load(r)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--cases", default=",".join(MODELS),
                        help=f"comma-separated models (default: {','.join(MODELS)})")
    parser.add_argument("--out", default=str(HERE / "results.json"), help="results JSON file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3, quick 1)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds one case may take (default 600, quick 20)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    parser.add_argument("--ray-samples", type=int, default=None,
                        help="samples sliced in the Ray comparison (default 16, quick 8)")
    parser.add_argument("--label", default="", help="free text stored in the results")
    parser.add_argument("--markdown", metavar="RESULTS_JSON",
                        help="print a results file as Markdown tables and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return 0
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 132)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in MODELS]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(MODELS)}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.budget = args.budget or (20.0 if args.quick else 600.0)
    ray_samples = args.ray_samples or (2 * RAY_SHARD if args.quick else 4 * RAY_SHARD)
    do_ray = "resnet10" in cases and not args.no_ray
    if do_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            console.print("[yellow]Ray is not installed: skipping the Ray comparison[/]")
            do_ray = False

    results: dict[str, Any] = {"environment": environment(args), "profiling": [],
                               "slicing": [], "ray": []}
    common = {"threads": args.threads, "repeats": args.repeats, "budget": args.budget}
    with tempfile.TemporaryDirectory(prefix="nnslicer-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for model in cases:
            profile_path = str(tmp / f"{model}.profile.safetensors")
            results["profiling"].append(spawn(dict(
                common, kind="profile", model=model, profile_path=profile_path,
                profile_samples=PROFILE_BATCH if args.quick else PROFILE_SAMPLES[model]), tmp,
                console.print))
            for batch in BATCHES:
                results["slicing"].append(spawn(dict(
                    common, kind="slice", model=model, batch=batch, profile_path=profile_path),
                    tmp, console.print))
            if model == "resnet10" and do_ray:
                out = spawn(dict(common, kind="ray", model=model, profile_path=profile_path,
                                 samples=ray_samples, workers=[1, 2]), tmp, console.print)
                results["ray"] = [dict(r, load_1min=out["load_1min"]) for r in out["rows"]]
                results["ray_driver_rss_peak_mb"] = out["rss_peak_mb_driver"]
    results["environment"]["load_1min_at_end"] = os.getloadavg()[0]
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    render(results, console)
    console.print(f"results written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

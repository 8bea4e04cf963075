"""Slice ÷ inference of two engine versions over architecture-suite entries, alternating.

    git archive <commit> src | tar -x -C /tmp/eng_old
    python benchmarks/ab_architectures.py /tmp/eng_old/src                  # every entry
    python benchmarks/ab_architectures.py /tmp/eng_old/src --only alexnet hrnet --rounds 2

For every round and entry, ``architectures.py --only ENTRY`` runs in a fresh process with the
old tree first on ``PYTHONPATH``, then with the installed (new) one, so both see the same machine
drift. Prints a markdown table of each entry's ratios (old → new, one per round) and the median,
worst and counts of both; ``--out DIR`` keeps every run's JSON there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def suite_entries() -> list[str]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from architectures import SUITE

    return list(SUITE)


def run_entry(entry: str, src: str | None, out: Path) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    subprocess.run([sys.executable, str(HERE / "architectures.py"), "--quiet", "--only", entry,
                    "--out", str(out)], env=env, check=True)
    return json.loads(out.read_text())["results"][0]


def summary(ratios: list[float]) -> str:
    return (f"median {statistics.median(ratios):.1f}×, worst {max(ratios):.0f}×, "
            f"≤ 12× {sum(r <= 12 for r in ratios)}, ≤ 25× {sum(r <= 25 for r in ratios)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_src", help="the old engine's src directory")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="suite entries to run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, help="keep every run's JSON in this directory")
    args = parser.parse_args()
    entries = args.only or suite_entries()
    out = args.out or Path(tempfile.mkdtemp(prefix="ab_architectures_"))
    out.mkdir(parents=True, exist_ok=True)
    ratios: dict[str, dict[str, list[float]]] = {e: {"old": [], "new": []} for e in entries}
    for r in range(args.rounds):
        for entry in entries:
            for kind, src in (("old", args.old_src), ("new", None)):
                row = run_entry(entry, src, out / f"{kind}_{entry}_{r}.json")
                if row.get("ok"):
                    ratios[entry][kind].append(row["ratio"])
    print("| entry | old | new |\n|---|---|---|")
    for entry, d in ratios.items():
        cells = [", ".join(f"{v:.1f}×" for v in d[k]) or "refused" for k in ("old", "new")]
        print(f"| {entry} | {cells[0]} | {cells[1]} |")
    for kind in ("old", "new"):
        medians = [statistics.median(d[kind]) for d in ratios.values() if d[kind]]
        if medians:
            print(f"{kind}: {summary(medians)} ({len(medians)} entries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

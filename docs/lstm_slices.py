"""Slices of the LSTM digit classifier (an image read row by row): which pixels, time steps
and gates they hold. Writes a PNG and prints the numbers docs/RESULTS.md quotes.

    nnslicer train --arch lstm --data mnist-digits --epochs 12 --lr 3e-3 --out runs/lstm
    nnslicer profile --model runs/lstm --data mnist-digits --out runs/lstm.profile.safetensors
    python docs/lstm_slices.py runs/lstm runs/lstm.profile.safetensors docs/figures/lstm_slices.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer.data.datasets import load_dataset  # noqa: E402
from nnslicer.models.loading import load_model  # noqa: E402

GATES = ("input i", "forget f", "cell g", "output o")


def main(model_path: str, profile_path: str, out: str) -> None:
    torch.set_num_threads(2)
    model, _ = load_model(model_path)
    slicer = nnslicer.Slicer(model.eval())
    slicer.use_profile(profile_path)
    test = load_dataset("mnist-digits", "test")
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.4))
    for row, digit in enumerate((1, 7)):
        x = test.x[test.y == digit][:20]
        s = slicer.slice(x, target=digit)
        pixels = s.neurons[slicer.graph.input_name].reshape(28, 28).float()
        hidden = s.synapses["lstm.weight_hh_l0"]
        inputs = s.synapses["lstm.weight_ih_l0"]
        H = hidden.shape[1]
        limit = max(1.0, float(pixels.abs().max()))
        ax = axes[row, 0]
        image = ax.imshow(pixels, cmap="RdBu", vmin=-limit, vmax=limit)
        ax.set_title(f"digit {digit}: pixel contributions\n(20 test images, θ = 0.2)")
        ax.set_ylabel("image row = time step")
        fig.colorbar(image, ax=ax, fraction=0.046, label="contribution (blue +, red −)")
        steps = pixels.abs().sum(1)
        axes[row, 1].bar(range(28), steps, color="tab:blue")
        axes[row, 1].set_title("|contribution| per time step (row)")
        axes[row, 1].set_xlabel("time step")
        in_share = [int((inputs[g * H:(g + 1) * H] != 0).sum()) / inputs[g * H:(g + 1) * H]
                    .numel() for g in range(4)]
        hh_share = [int((hidden[g * H:(g + 1) * H] != 0).sum()) / hidden[g * H:(g + 1) * H]
                    .numel() for g in range(4)]
        xs = torch.arange(4)
        axes[row, 2].bar(xs - 0.2, in_share, 0.4, label="weight_ih (pixels)")
        axes[row, 2].bar(xs + 0.2, hh_share, 0.4, label="weight_hh (memory)")
        axes[row, 2].set_xticks(xs, GATES)
        axes[row, 2].set_ylim(0, 1)
        axes[row, 2].set_title("synapses in the slice, per gate")
        axes[row, 2].legend(fontsize=8)
        first, last = int(steps.nonzero().min()), int(steps.nonzero().max())
        top = steps.argsort(descending=True)[:3].tolist()
        print(f"digit {digit}: pixels in slice {int((pixels != 0).sum())}/784, time steps "
              f"{first}..{last}, largest steps {top}; synapses in slice per gate "
              + ", ".join(f"{g} ih {a:.0%} hh {b:.0%}" for g, a, b in
                          zip(GATES, in_share, hh_share, strict=True)))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])

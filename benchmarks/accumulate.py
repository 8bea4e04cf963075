"""Cost of adding one batch of node values into per-class float64 sums, by method.

Usage: python benchmarks/accumulate.py [threads]
Batch 16, 10 classes, random float32 values of a few layer shapes; milliseconds per batch.
"""

import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)


def ms(fn, reps: int = 20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


def compare(shape: tuple[int, ...]) -> str:
    v = torch.randn(*shape)
    classes = torch.randint(0, 10, (shape[0],))
    sums = torch.zeros(10, *shape[1:], dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(classes, 10).to(torch.float64).t()
    flat = v.reshape(shape[0], -1)
    class_list = classes.tolist()

    def gemm() -> None:
        sums.add_((onehot @ flat.to(torch.float64)).view_as(sums))

    def index_add() -> None:
        sums.index_add_(0, classes, v.to(torch.float64))

    def per_sample() -> None:
        for i, c in enumerate(class_list):
            sums[c].add_(v[i])

    return (f"{tuple(shape)} ({v[0].numel()} values/sample), {threads} thread(s): one-hot GEMM "
            f"{ms(gemm):.3f} ms, to(float64) + index_add_ {ms(index_add):.3f} ms, per-sample "
            f"in-place add {ms(per_sample):.3f} ms")


for shape in [(16, 64, 32, 32), (16, 512, 4, 4), (16, 6, 28, 28)]:
    print(compare(shape))

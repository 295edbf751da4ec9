"""Timing shared by the benchmark scripts (imported as ``from timing import best_of``)."""

import time


def best_of(fn, repeats):
    """Fastest of ``repeats`` wall-clock runs of ``fn()``, in seconds.

    The minimum, not the mean: on a shared machine the slow runs measure the neighbours.
    """
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)

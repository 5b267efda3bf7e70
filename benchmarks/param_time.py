"""What a HyperVAE step pays for reading its parameters through `PyroModule`, against reading them as
plain tensors, in the same process.

A `PyroModule` weight read inside the module's Pyro context is a `pyro.param` statement: a message
through the effect handlers of the step (the trace, the plates). A training step reads every
parameter once in the model's or the guide's trace. This times reading all of the HyperVAE's
parameters once under a trace, both ways, median of --repeats, in turns.

    python benchmarks/param_time.py [--repeats 200] [--threads 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from pyro import poutine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import repeats_and_threads

from pyrohvae.config import RunConfig
from pyrohvae.program import build


def main():
    args = repeats_and_threads(__doc__, 200)
    program = build(RunConfig(dataset="mnist", model="hypervae", preset="paper", batch_size=5))
    weights = [(m, n) for m in program.modules() for n in m._parameters]

    def through_pyro():
        with program._pyro_context:  # as inside model() and guide(), which are pyro_methods
            for m, n in weights:
                getattr(m, n)

    def plain():
        for m, n in weights:
            m._parameters[n]

    samples = {"pyro": [], "plain": []}
    for _ in range(args.repeats):
        for name, fn in (("pyro", through_pyro), ("plain", plain)):
            start = time.perf_counter()
            poutine.trace(fn).get_trace()
            samples[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(s) for name, s in samples.items()}
    print(
        f"{len(weights)} parameters read once under a trace: through PyroModule {ms['pyro']:.3f} ms, "
        f"as plain tensors {ms['plain']:.3f} ms ({ms['pyro'] / ms['plain']:.0f}×), "
        f"{ms['pyro'] - ms['plain']:.3f} ms a step more"
    )


if __name__ == "__main__":
    main()

"""The experiment scripts' choices of what a run trains, which no run of theirs could show wrong after
the fact: a full-length run that trained another model than its row names scores plausibly."""

from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def fewshot_experiment(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # the scripts import their `common` as a sibling
    import fewshot

    return fewshot


def test_every_variant_is_a_valid_run_on_every_benchmark(fewshot_experiment):
    fx = fewshot_experiment
    for benchmark, spec in fx.BENCHMARKS.items():
        for name, (_about, variant) in fx.VARIANTS.items():
            config = fx.full_config(benchmark, name, steps=10, seed=3)
            assert (config.dataset, config.steps, config.seed) == (spec["data"]["dataset"], 10, 3)
            # what the variant is, beyond its batch, reaches the run
            for key, value in variant.items():
                if key not in fx.TASK_BATCH:
                    assert getattr(config, key) == value, (benchmark, name, key)


@pytest.mark.parametrize(
    "benchmark, name, batch_size, tasks_per_step",
    [
        # the benchmark's batch where the variant keeps the screen's
        ("omniglot-characters", "pool-split-shots", 20, 16),
        ("omniglot-alphabets", "pool-split-shots", 100, 4),
        ("omniglot-characters", "vae", 320, 1),
        ("mnist-held-out-2", "vae-z32", 100, 1),
        # the variant's change to the screen's batch, on the benchmark's
        ("omniglot-characters", "pool-split-shots-z32-k-attend-t32-kl1", 20, 32),
        ("omniglot-characters", "pool-split-shots-z32-k-attend-t64-kl1", 20, 64),
        ("omniglot-alphabets", "pool-split-shots-z32-k-attend-t32-kl1", 100, 32),
        ("omniglot-characters", "vae-b640", 640, 1),
        ("omniglot-characters", "vae-z32-b1280", 1280, 1),
    ],
)
def test_a_full_length_run_trains_the_benchmark_s_batch_as_its_variant_changes_it(
    fewshot_experiment, benchmark, name, batch_size, tasks_per_step
):
    config = fewshot_experiment.full_config(benchmark, name, steps=10, seed=0)
    assert (config.batch_size, config.tasks_per_step) == (batch_size, tasks_per_step)

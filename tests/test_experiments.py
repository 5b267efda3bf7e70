"""The experiment scripts' choices of what a run trains and which VAE its gains are over, which no run
of theirs could show wrong after the fact: a full-length run that trained another model than its row
names scores plausibly, and so do gains over another VAE than the text names."""

from pathlib import Path

import pytest
from conftest import program_of, task_data

from pyrohvae import fewshot as library

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


def test_a_refined_variant_scores_its_base_s_run(fewshot_experiment, tmp_path):
    fx = fewshot_experiment
    assert fx.REFINED
    for name, (base, steps, _loo, _shots) in fx.REFINED.items():
        assert steps > 0
        for benchmark in fx.BENCHMARKS:
            assert fx.full_config(benchmark, name, 10, 0) == fx.full_config(benchmark, base, 10, 0)
            folder = fx.full_run_folder(tmp_path, benchmark, name, 10, 0)
            assert folder == fx.full_run_folder(tmp_path, benchmark, base, 10, 0)
            shots = fx.scored_shots(benchmark, name)
            assert 0 in shots and set(shots) <= set(fx.BENCHMARKS[benchmark]["shots"])
        assert fx.screen_config(name, 10, 0) == fx.screen_config(base, 10, 0)
        assert fx.screen_run_folder(tmp_path, name, 10, 0) == fx.screen_run_folder(tmp_path, base, 10, 0)
        # its scores beside its base's in the run folder, never in the base's store
        store = tmp_path / "fewshot-scores-validation-step10.pt"
        assert fx.refined_store(store, name) != store and fx.refined_store(store, base) == store
    assert len({fx.refined_store(store, name) for name in fx.REFINED}) == len(fx.REFINED)
    # the characters' targets are at k = 1, 4 and 9, and the set figure reads k = 0 to 4
    refined = next(iter(fx.REFINED))
    assert {0, 1, 2, 3, 4, 9} <= set(fx.scored_shots("omniglot-characters", refined))
    assert fx.scored_shots("omniglot-characters", "paper") == fx.BENCHMARKS["omniglot-characters"]["shots"]
    assert fx.full_run_folder(tmp_path, "omniglot-alphabets", "vae", 10, 0).name == (
        "fewshot-omniglot-alphabets-vae-steps10-seed0"
    )


def _length_row(curve: dict) -> dict:
    return {"by_step": [{"steps": n, "rows": [{"model": "vae", "nll": v}]} for n, v in curve.items()]}


def _full_row(config: str, steps: int, nll: dict, vae: float | None = None) -> dict:
    return {
        "benchmark": "omniglot-characters",
        "config": config,
        "steps": steps,
        "rows": [{"model": m, "nll": v} for m, v in nll.items()],
        "set_figure": nll.get("k=1", 0.0),
        **({"vae": {"nll": vae}} if vae is not None else {}),
    }


def test_gains_are_over_our_vae_of_the_length_the_validation_characters_chose(fewshot_experiment):
    fx = fewshot_experiment
    lengths = [_length_row({2000: 125.0, 4000: 122.0, 6000: 123.0})]  # best at 4,000, not the last
    model = {"k=1": 110.0, "k=4": 107.0, "k=9": 100.0}
    rows = [
        _full_row("vae", 4000, {"vae": 130.0}),
        _full_row("vae", 10000, {"vae": 133.0}),
        _full_row("pool-split-shots", 10000, model, vae=134.0),  # a VAE trained beside it, as long
    ]
    text = "\n".join(fx._chosen_length_lines(rows, lengths))
    assert "best on the validation characters at 4,000 steps" in text
    assert "scores 130.00" in text
    assert "10,000 steps 133.00 and 134.00" in text  # both trainings of the longer VAE are named
    # gains over the chosen VAE (130), not over the longer ones it beats
    assert "k=1 20.00 vs ≥ 6.4" in text and "k=9 30.00 vs ≥ 24.6" in text
    assert "k=4 23.00 vs ≥ 15.0" in text


def test_a_model_of_another_seed_is_set_against_the_chosen_length_vae_of_its_own_seed(fewshot_experiment):
    fx = fewshot_experiment
    lengths = [_length_row({2000: 125.0, 4000: 122.0, 6000: 123.0})]
    model = {"k=1": 110.0, "k=4": 107.0, "k=9": 100.0}
    rows = [
        {**_full_row("vae", 4000, {"vae": 130.0}), "seed": 0},
        {**_full_row("pool-split-shots", 10000, model, vae=134.0), "seed": 0},
        {**_full_row("vae", 4000, {"vae": 126.0}), "seed": 1},
        {**_full_row("vae", 10000, {"vae": 128.0}), "seed": 1},
        {**_full_row("pool-split-shots", 10000, {k: v + 1 for k, v in model.items()}, vae=128.0), "seed": 1},
    ]
    text = "\n".join(fx._chosen_length_lines(rows, lengths, seed=0))
    table, seed1 = text.split("At training seed 1")
    assert "scores 130.00" in table and "10,000 steps 134.00" in table  # the other seed's VAEs not among them
    assert "128.00" not in table and "k=1 20.00 vs ≥ 6.4" in table and "k=1 15.00" not in table
    assert "of 4,000 steps scores 126.00" in seed1
    assert "k=1 15.00 vs ≥ 6.4" in seed1 and "k=9 25.00 vs ≥ 24.6" in seed1 and "k=4 18.00 vs ≥ 15.0" in seed1
    # no VAE of the chosen length at a seed: no paragraph for it
    assert "At training seed" not in "\n".join(fx._chosen_length_lines(rows[:2] + rows[3:], lengths, seed=0))


def test_no_gains_over_a_chosen_length_that_was_not_scored_on_the_test(fewshot_experiment):
    fx = fewshot_experiment
    lengths = [_length_row({2000: 125.0, 4000: 122.0})]
    rows = [
        _full_row("vae", 10000, {"vae": 133.0}),
        _full_row("pool-split-shots", 10000, {"k=9": 1.0}, 133.0),
    ]
    assert fx._chosen_length_lines(rows, lengths) == []


def test_the_report_is_the_table_seed_s_whichever_seed_a_stage_ran(fewshot_experiment, tmp_path):
    """A screen at --seed 1 ends by rebuilding fewshot.md: from the same rows it must write the same
    report as any other stage, seed 0's screen beside the reruns, not seed 1's point of view."""
    import argparse
    import shutil

    results = tmp_path / "results"
    shutil.copytree(EXPERIMENTS / "results", results)

    def report(seed):
        args = argparse.Namespace(
            results=results, runs=tmp_path / "runs", seed=seed, screen_steps=3000, device="cpu"
        )
        fewshot_experiment.report(args)
        return (results / "fewshot.md").read_text()

    table = report(0)
    assert "## Reading" in table and report(1) == table


def test_a_full_row_at_another_seed_is_set_beside_the_table_not_in_it(fewshot_experiment, tmp_path):
    """Rows of `--stages full --seed 1` hold no seed of their own: read as the table's, they would
    replace its seed-0 row of the same config and pair its gains with the other seed's VAE."""
    import argparse
    import json
    import shutil

    results = tmp_path / "results"
    shutil.copytree(EXPERIMENTS / "results", results)
    args = argparse.Namespace(
        results=results, runs=tmp_path / "runs", seed=1, screen_steps=3000, device="cpu"
    )
    fewshot_experiment.report(args)
    before = (results / "fewshot.md").read_text()
    name = "full-omniglot-characters-pool-split-shots-steps10000-seed{}.json"
    row = json.loads((results / "fewshot" / name.format(0)).read_text())
    for x in row["rows"]:
        x["nll"] += 50.0  # far from every seed-0 figure
    for g in row["gains"]:
        g["gain"] = 1.0
    (results / "fewshot" / name.format(1)).write_text(json.dumps(row))
    fewshot_experiment.report(args)
    after = (results / "fewshot.md").read_text()
    head, tail = after.split("## The benchmarks at another training seed")
    assert head in before  # the seed-0 tables and targets as they were
    k1 = next(x["nll"] for x in row["rows"] if x["model"] == "k=1")
    assert "| omniglot-characters | pool-split-shots | 1 | " in tail and f"{k1:.2f}" in tail
    assert "| omniglot-characters | pool-split-shots | 0 | " in tail  # beside its seed-0 row
    assert (
        "pool-split-shots, seed 1: the curve falls" in tail and "k=9 1.00 vs ≥ 24.6 (missed by 23.60)" in tail
    )
    seeds = {(r["config"], r["seed"]) for r in json.loads((results / "fewshot.json").read_text())["rows"]}
    assert {("pool-split-shots", 0), ("pool-split-shots", 1)} <= seeds


@pytest.mark.data
def test_the_length_stage_resumes_each_checkpoint_s_scores(fewshot_experiment, tmp_path, monkeypatch):
    """The length stage scores several checkpoints of a run of hours, one after another: stopped part
    way (a session's end), the same command goes on from the scores it kept, each checkpoint's apart,
    and writes the row an unbroken one writes."""
    import argparse
    import json

    from pyrohvae import fewshot

    fx = fewshot_experiment
    monkeypatch.setattr(fx, "SCREEN", {"per_task": 1, "samples": 2, "shots": (0, 1)})
    monkeypatch.setattr(fx, "report", lambda args: None)
    name = fx.no_shot_variant(0.5)
    args = argparse.Namespace(
        variants=[name], steps=2, keep_every=1, seed=0, runs=tmp_path / "runs", device="cpu", progress=False
    )
    rows = tmp_path / "rows"
    rows.mkdir()
    real, scored = fewshot.scores_given_shots, []

    def stopped_in_the_second_checkpoint(*a, **kw):
        if len(scored) == 4:  # the first checkpoint's three models and one of the second's
            raise KeyboardInterrupt
        scored.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(fewshot, "scores_given_shots", stopped_in_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        fx.length(args, rows)
    assert not list(rows.iterdir())
    monkeypatch.setattr(fewshot, "scores_given_shots", lambda *a, **kw: scored.append(1) or real(*a, **kw))
    fx.length(args, rows)
    assert len(scored) == 6  # the second checkpoint's other two models, scored once more each
    resumed = json.loads((rows / f"length-{name}-steps2-seed0.json").read_text())
    (rows / f"length-{name}-steps2-seed0.json").unlink()
    for kept in (tmp_path / "runs").glob("*/fewshot-scores-*.pt"):
        kept.unlink()
    fx.length(args, rows)  # unbroken, from nothing kept
    assert json.loads((rows / f"length-{name}-steps2-seed0.json").read_text()) == resumed
    steps = [s["steps"] for s in resumed["by_step"]]
    assert steps == [1, 2] and resumed["by_step"][0]["rows"] != resumed["by_step"][1]["rows"]


def test_the_shots_prior_s_ceilings_choose_per_alphabet_and_per_image(monkeypatch):
    """The ceiling of a fit per alphabet sums each alphabet's best offset, which no one offset for all
    need reach, and the per-image ceiling lies below it."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import shot_share

    tasks = ["A", "A", "B", "B"]
    rows = [  # offset -1 suits alphabet A, +1 alphabet B, 0 both a little; image 1 alone is best at 0
        {"offset": -1.0, "tasks": tasks, "nll": [1.0, 3.0, 9.0, 9.0]},
        {"offset": 0.0, "tasks": tasks, "nll": [4.0, 1.0, 5.0, 5.0]},
        {"offset": 1.0, "tasks": tasks, "nll": [9.0, 9.0, 2.0, 2.0]},
    ]
    c = shot_share.ceilings(rows)
    assert c["at"] == {-1.0: 5.5, 0.0: 3.75, 1.0: 5.5}  # one offset for all: 0 is best
    assert c["best"] == {"A": -1.0, "B": 1.0}
    assert c["alphabet"] == (1.0 + 3.0 + 2.0 + 2.0) / 4 and c["image"] == (1.0 + 1.0 + 2.0 + 2.0) / 4


def test_the_screen_s_tail_readings_flag_one_statistic_far_out(monkeypatch):
    """A statistic's tail is the share of fit values as far out on its side, never 0; an image far out
    in one statistic of ten and typical in the rest is flagged by the statistics' smallest tail
    (and by the rules built on it) above an image a little off in all ten, and by the largest single
    difference (`chebyshev-knn`) above one well off in all ten, which the Euclidean distance flags."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import numpy as np
    import typicality_screen as ts

    rng = np.random.default_rng(0)
    fit = rng.standard_normal((999, 10))
    t = ts.tails(fit, np.array([[-50.0] * 10, [50.0] * 10, [float(np.median(fit[:, 0]))] * 10]))
    assert np.allclose(t[:2], 2 / 1000) and np.all(t[2, :1] > 0.99)
    one_far = np.zeros((1, 10))
    one_far[0, 3] = 6.0
    all_off = np.full((1, 10), 1.5)
    for density in ("max-tail", "mixture+max-tail"):
        far, off = ts.density_score(fit, np.concatenate([one_far, all_off]), density)
        assert far > off, density
    # the sum over statistics reads the image a little off in all ten as the more untypical
    far, off = ts.density_score(fit, np.concatenate([one_far, all_off]), "fisher")
    assert off > far
    assert ts.density_score(fit, np.zeros((1, 10)), "knn-10")[0] < ts.density_score(fit, one_far, "knn-10")[0]
    # far out in one against well off in all ten: the Euclidean distance flags the second, the
    # largest single difference the first
    one_farther, all_far = np.zeros((1, 10)), np.full((1, 10), 3.0)
    one_farther[0, 3] = 8.0
    both = np.concatenate([one_farther, all_far])
    far, off = ts.density_score(fit, both, "knn-10")
    assert off > far
    far, off = ts.density_score(fit, both, "chebyshev-knn-10")
    assert far > off


def test_the_screen_s_whitened_reading_flags_a_broken_correlation(monkeypatch):
    """Two statistics that move together in the fit images: an image typical in each alone but off
    their line is flagged above one far out along it when their correlation is taken out, and below
    it when each is only standardized; the local outlier factor flags the far one above a typical one."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import numpy as np
    import typicality_screen as ts

    rng = np.random.default_rng(0)
    a = rng.standard_normal(1000)
    fit = np.stack([a, a + 0.05 * rng.standard_normal(1000)], 1)
    off_line, along = np.array([[0.2, -0.2]]), np.array([[3.0, 3.0]])
    scored = np.concatenate([off_line, along])
    off, far = ts.density_score(fit, scored, "whitened-knn-10")
    assert off > far
    off, far = ts.density_score(fit, scored, "knn-10")
    assert off < far
    typical, far = ts.density_score(fit, np.array([[0.0, 0.0], [4.0, 4.0]]), "lof-20")
    assert far > typical


@pytest.mark.data
def test_table3_s_pooled_typicality_gives_the_normal_images_the_scores_outliers_does(
    trained_run, tmp_path, monkeypatch
):
    """Table 3 computes a run's statistics once for all its outlier sets: the normal images' scores
    must be those `outliers` computes on each mixed set (the normal images a whole number of the
    importance sampler's chunks, as a test split is), and each set's scores its own images'."""
    import argparse
    import shutil

    import torch

    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import table3

    from pyrohvae import typicality
    from pyrohvae.outliers import mixed_set, outlier_data, run_scores
    from pyrohvae.train import load_run

    monkeypatch.setattr(typicality, "FIT_IMAGES", 200)
    run = tmp_path / "vae"
    shutil.copytree(trained_run("vae"), run)
    program, state = load_run(run)
    test = program.config.load_data("test")
    test = test.subset(torch.arange(100))
    args = argparse.Namespace(samples=2, seed=0, fraction=0.2, progress=False)
    pooled, fit = table3.pooled_typicality(run, program, state["step"], test, args)
    assert set(pooled) == set(table3.others("mnist")) and fit["pooled"] and fit["density"] == "knn"
    for other in ("omniglot", "mnist-upside-down"):
        mixed = mixed_set(test, outlier_data(other, 0), 0.2, 0)
        alone = run_scores(program, run, state["step"], mixed, ["typicality"], 2, 0)[0]["typicality"]
        scores, labels = pooled[other]
        assert len(scores) == len(mixed.data) and torch.equal(labels, mixed.labels)
        torch.testing.assert_close(scores[: len(test)], alone[: len(test)])
        assert not torch.equal(scores[len(test) :], pooled["fashion-mnist"][0][len(test) :])


def test_a_refined_variant_has_no_length_stage_of_its_own(fewshot_experiment, monkeypatch, tmp_path, capsys):
    """Its length would train a second copy of its base and score it unrefined under its name."""
    refined = next(iter(fewshot_experiment.REFINED))
    argv = ["fewshot.py", "--stages", "length", "--variants", refined, "--runs", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_:
        fewshot_experiment.main()
    assert exit_.value.code == 2 and "refined variant" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_stages_that_read_q_u_as_the_guide_gives_it_leave_a_refined_variant(
    fewshot_experiment, monkeypatch, tmp_path
):
    """The ceiling and the task models never refine q(u): a refined variant's rows there would be
    its base's under another name, so both stages pass it by, writing no row and reading no run."""
    refined = next(iter(fewshot_experiment.REFINED))
    results = tmp_path / "results"
    argv = ["fewshot.py", "--stages", "ceiling", "task-accuracy", "--full-configs", refined]
    argv += ["--benchmarks", "mnist-held-out-2", "--runs", str(tmp_path / "runs"), "--results", str(results)]
    monkeypatch.setattr("sys.argv", argv)
    fewshot_experiment.main()
    assert not list((results / "fewshot").iterdir())  # no row (the report is written anew, empty)
    assert not (tmp_path / "runs").exists()


def test_a_refined_row_is_set_against_its_run_as_the_guide_reads_it(fewshot_experiment, tmp_path):
    """The refinement's own change, paired on the same images and run: a refined row set beside its
    base's row alone would compare two trainings where the base was trained again."""
    program, data = program_of(random_context=True), task_data([5, 5])
    # the run as the guide reads it, scored first at more shots (its base's row): the refined row,
    # scored at fewer, reads that store and leaves it whole
    read = tmp_path / "read.pt"
    library.curve(program, data, (0, 2, 3), 2, 8, 3, progress=False, store=read)
    kept = read.read_bytes()
    settings = {"shots": (0, 2), "as_read_shots": (0, 2, 3), "per_task": 2, "samples": 8}
    state = {"step": 10, "seconds": 1.0}
    stores = (tmp_path / "refined.pt", None)
    row = fewshot_experiment.curve_row(
        program, state, data, None, None, settings, 3, False, stores, 4, False, read
    )
    assert read.read_bytes() == kept
    refined, plain = (
        library.curve(program, data, (0, 2), 2, 8, 3, progress=False, refine_steps=steps) for steps in (4, 0)
    )
    (k2,) = row["refinement"]
    assert k2["model"] == "k=2" and k2["as_read"] == pytest.approx(float(plain.nll["k=2"].mean()), abs=1e-4)
    change = float((refined.nll["k=2"] - plain.nll["k=2"]).mean())
    assert k2["change"] == pytest.approx(change, abs=1e-4) and abs(change) > 1e-3

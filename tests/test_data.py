import numpy as np
import pytest
import torch

from pyrohvae import data
from pyrohvae.batches import MixedBatches, TaskBatches
from pyrohvae.config import ConfigError, RunConfig

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def omniglot(data_root):
    return {part: data.load("omniglot", part, data_root) for part in data.PARTS}


def test_mnist_label_counts_and_values(data_root):
    train, test = data.load("mnist", "train", data_root), data.load("mnist", "test", data_root)
    assert train.task_sizes().tolist() == MNIST_TRAIN_COUNTS
    assert test.task_sizes().tolist() == MNIST_TEST_COUNTS
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert set(torch.unique(train.images).tolist()) == {0, 1}


def test_fashion_mnist_label_counts(data_root):
    assert data.load("fashion-mnist", "train", data_root).task_sizes().tolist() == [6000] * 10
    test = data.load("fashion-mnist", "test", data_root)
    assert test.task_sizes().tolist() == [1000] * 10
    assert test.task_names[9] == "ankle-boot"


def test_omniglot_drawer_split(omniglot):
    train, test = omniglot["train"], omniglot["test"]
    assert (len(train), len(test)) == (24345, 8115)
    assert train.num_tasks == test.num_tasks == 50
    assert train.task_names == test.task_names
    # every character: 15 drawers train, 5 test
    assert train.task_sizes().sum() == 1623 * 15
    assert set(torch.unique(train.images).tolist()) == {0, 1}


def test_omniglot_background_split_and_character_tasks(data_root):
    train = data.load("omniglot", "train", data_root, split="background")
    test = data.load("omniglot", "test", data_root, split="background")
    assert (train.num_tasks, test.num_tasks) == (30, 20)
    assert (len(train), len(test)) == (964 * 20, 659 * 20)
    assert not set(train.task_names) & set(test.task_names)
    chars = data.load("omniglot", "train", data_root, task_by="character")
    assert chars.num_tasks == 1623 and chars.task_sizes().unique().tolist() == [15]


def test_omniglot_strokes_are_ones(omniglot):
    # strokes cover a small part of a character: after inversion most pixels are 0
    assert 0.03 < omniglot["train"].images.float().mean() < 0.2


def test_same_bits_on_every_load(data_root, tmp_path, monkeypatch):
    first = data.load("mnist", "test", data_root).images
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # rebuilt from the IDX files
    rebuilt = data.load("mnist", "test", data_root).images
    cached = data.load("mnist", "test", data_root).images
    assert torch.equal(first, rebuilt) and torch.equal(rebuilt, cached)
    assert list(tmp_path.rglob("*.pt")), "the processed tensors are cached"


def test_binarization_draws_bernoulli_of_the_gray_level():
    gray = np.full((200, 28, 28), 77, dtype=np.uint8)
    bits = data.binarize(gray, [f"k{i}" for i in range(200)])
    assert abs(bits.mean() - 77 / 255) < 0.005
    assert not (bits[0] == bits[1]).all()  # each image its own stream
    # depends on the key, not on the position in the batch
    again = data.binarize(gray[:3][::-1].copy(), ["k2", "k1", "k0"])
    assert (again[::-1] == bits[:3]).all()
    assert data.binarize(gray[:1], ["k0"], seed=1).tolist() != bits[:1].tolist()
    assert data.binarize(np.full((1, 28, 28), 255, np.uint8), ["a"]).all()
    assert not data.binarize(np.zeros((1, 28, 28), np.uint8), ["a"]).any()


def test_cache_is_never_written_into_the_data_root(data_root):
    data.load("mnist", "test", data_root)
    assert not list(data_root.rglob("*.pt"))


def test_missing_files_name_the_folder_and_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise OSError("no network here")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(data.DataError) as e:
        data.load("mnist", "train", tmp_path / "empty")
    message = str(e.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "no network here" in message
    assert not (tmp_path / "empty").exists(), "a failed download leaves no folders behind"


def test_data_root_resolution(monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, "/from/env")
    assert str(data.data_root("/given")) == "/given"
    assert str(data.data_root(None)) == "/from/env"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert str(data.data_root(None)) == "data"


def test_validation_part_is_a_fixed_share_of_every_task():
    sizes = [1, 10, 90, 200]
    index = torch.arange(sum(sizes))
    images = torch.zeros(len(index), 1, 28, 28, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = index % 256, index // 256  # each image names itself
    tasks = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    whole = data.TaskData(images, tasks, ["a", "b", "c", "d"], "toy")

    def names(part):
        return set((part.images[:, 0, 0, 0].long() + 256 * part.images[:, 0, 0, 1].long()).tolist())

    kept, held = whole.hold_out(0.1)
    assert names(kept) | names(held) == set(index.tolist()) and not names(kept) & names(held)
    assert held.task_sizes().tolist() == [0, 1, 9, 20]  # a task of one image stays in training
    _again_kept, again_held = whole.hold_out(0.1)
    assert names(again_held) == names(held)
    assert names(whole.hold_out(0.1, seed=1)[1]) != names(held)


def test_a_runs_validation_part_comes_out_of_its_training_part(data_root):
    config = RunConfig(dataset="mnist", validation=0.1, exclude_classes=["3"])
    train, validation = config.load_data("train", data_root), config.load_data("validation", data_root)
    counts = [c for i, c in enumerate(MNIST_TRAIN_COUNTS) if i != 3]
    assert validation.task_names == train.task_names and "3" not in train.task_names
    assert validation.task_sizes().tolist() == [round(0.1 * c) for c in counts]
    assert len(train) + len(validation) == sum(counts)
    assert len(config.load_data("test", data_root)) == 10000  # the test part keeps every class
    with pytest.raises(ConfigError, match="no validation part"):
        RunConfig(dataset="mnist").load_data("validation", data_root)


def test_task_batches_come_from_one_task_each(data_root):
    test = data.load("mnist", "test", data_root)
    batches = TaskBatches(test, batch_size=100, tasks_per_step=3, seed=0)
    x, tasks = next(batches)
    assert x.shape == (3, 100, 1, 28, 28)
    # find each image's task by matching it in the data: one task per row, three distinct rows
    flat = test.images.flatten(1)
    labels = []
    for row in x:
        hits = [int(test.tasks[(flat == img.flatten()).all(1)].unique()[0]) for img in row[:20]]
        assert len(set(hits)) == 1
        labels.append(hits[0])
    assert len(set(labels)) == 3 and labels == tasks.tolist()


def test_small_tasks_are_drawn_with_replacement(data_root):
    chars = data.load("omniglot", "train", data_root, task_by="character")
    batches = TaskBatches(chars, batch_size=100, tasks_per_step=1, seed=0)
    x = next(batches)[0][0]
    distinct = torch.unique(x.flatten(1), dim=0)
    assert x.shape[0] == 100 and len(distinct) <= 15


def test_batches_repeat_with_the_seed(data_root):
    test = data.load("mnist", "test", data_root)
    a, b = TaskBatches(test, 100, 2, seed=7), TaskBatches(test, 100, 2, seed=7)
    assert all(torch.equal(next(a)[0], next(b)[0]) for _ in range(3))
    m = MixedBatches(test, 100, seed=1)
    assert next(m)[0].shape == (1, 100, 1, 28, 28)


def test_batches_flip_the_share_of_pixels_asked(data_root):
    test = data.load("mnist", "test", data_root)
    for make in (
        lambda **f: TaskBatches(test, 100, 2, seed=7, **f),
        lambda **f: MixedBatches(test, 100, 1, **f),
    ):
        clean, noisy = make(), make(flip=0.2)
        (a, _), (b, _) = next(clean), next(noisy)  # the same images: noise is drawn after the picks
        assert b.dtype == a.dtype and set(b.unique().tolist()) <= {0, 1}
        assert abs(float((a != b).float().mean()) - 0.2) < 0.01


def test_turned_tasks_are_each_task_turned_as_three_more():
    images = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    images[:, 0, 0, 1] = 1  # a mark by the top left corner, which each turn carries to another corner
    images[2, 0, 5, 5] = 1
    whole = data.TaskData(images, torch.tensor([0, 0, 1]), ["a", "b"], "toy")
    turned = whole.with_turns()
    turns = ("", " turned 90", " turned 180", " turned 270")
    assert turned.task_names == [name + turn for turn in turns for name in ("a", "b")]
    assert turned.task_sizes().tolist() == [2, 1] * 4
    for k in range(4):
        assert torch.equal(turned.images[turned.tasks // 2 == k], images.rot90(k, (-2, -1)))
    # a quarter turn anticlockwise: (row, column) -> (27 - column, row)
    assert turned.images[turned.tasks == 3][0, 0].nonzero().tolist() == [[22, 5], [26, 0]]


def test_threshold_binarization_is_the_gray_level_from_half_up(data_root):
    from torchvision.datasets.mnist import read_image_file

    from pyrohvae.outliers import outlier_data

    gray = read_image_file(str(data.data_root(data_root) / "MNIST" / "raw" / "t10k-images-idx3-ubyte"))
    thresholded = RunConfig(dataset="mnist", binarize="threshold").load_data("test", data_root)
    assert torch.equal(thresholded.images[:, 0], (gray >= 128).to(torch.uint8))
    sampled = data.load("mnist", "test", data_root)
    assert not torch.equal(sampled.images, thresholded.images)  # each its own cache entry
    assert torch.equal(outlier_data("mnist", 0, data_root, "threshold").images, thresholded.images)
    with pytest.raises(data.DataError, match="unknown binarization 'coin'; choose one of sample, threshold"):
        data.load("mnist", "test", data_root, binarization="coin")
    with pytest.raises(ConfigError, match="--binarize threshold applies to the built-in datasets"):
        RunConfig(dataset=str(data_root), binarize="threshold")


def _alphabets(tasks=2, characters=6, drawings=20):
    """A small dataset of alphabets of characters; each image writes its own index in its first bits."""
    n = tasks * characters * drawings
    index = torch.arange(n)
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    images.view(n, -1)[:, :12] = ((index[:, None] >> torch.arange(12)) & 1).to(torch.uint8)
    groups = index // drawings
    names = [f"alphabet{t}" for t in range(tasks)]
    return data.TaskData(images, groups // characters, names, "alphabets", groups)


def _indices(x):
    return (x.flatten(-3)[..., :12].long() << torch.arange(12)).sum(-1)


def test_task_characters_draw_minibatches_from_a_few_characters():
    alphabets = _alphabets()
    narrow = TaskBatches(alphabets, 30, 2, seed=3, characters=2)
    for _ in range(20):
        x, tasks = next(narrow)
        for row, task in zip(_indices(x), tasks.tolist(), strict=True):
            assert len(row.unique()) == 30  # 40 drawings of two characters: no drawing twice
            assert set((alphabets.groups[row] // 6).tolist()) == {task}
            assert len(alphabets.groups[row].unique()) == 2
    # a share of them: the rest from the whole alphabet, and both kinds occur
    mixed = TaskBatches(alphabets, 30, 2, seed=3, characters=2, characters_share=0.5)
    counts = [len(alphabets.groups[row].unique()) for _ in range(30) for row in _indices(next(mixed)[0])]
    assert min(counts) == 2 and max(counts) > 4
    # 0 characters draws what TaskBatches always drew, so earlier runs reproduce
    a, b = TaskBatches(alphabets, 30, 2, seed=3), TaskBatches(alphabets, 30, 2, seed=3, characters=0)
    assert all(torch.equal(next(a)[0], next(b)[0]) for _ in range(3))


def test_task_characters_need_characters():
    alphabets = _alphabets()
    plain = data.TaskData(alphabets.images, alphabets.tasks, alphabets.task_names, "plain")
    with pytest.raises(ValueError, match="not made of characters"):
        TaskBatches(plain, 30, 1, seed=0, characters=2)
    with pytest.raises(ConfigError, match="--task-by alphabet"):
        RunConfig(dataset="omniglot", task_by="character", task_characters=5)
    with pytest.raises(ConfigError, match="--task-characters"):
        RunConfig(dataset="mnist", task_characters=5)
    with pytest.raises(ConfigError, match="a VAE's minibatches"):
        RunConfig(dataset="omniglot", model="vae", task_characters=5)


def test_characters_follow_the_images():
    alphabets = _alphabets()
    kept, held = alphabets.without_tasks(["alphabet0"]).hold_out(0.25)
    for part in (kept, held):
        assert torch.equal(part.groups, _indices(part.images) // 20)
    turned = alphabets.with_turns()
    assert len(turned.groups.unique()) == 4 * len(alphabets.groups.unique())
    # a character's turned drawings are a character of the turned alphabet
    for c in turned.groups.unique():
        assert len(turned.tasks[turned.groups == c].unique()) == 1


def test_omniglot_alphabets_know_their_characters(omniglot):
    train = omniglot["train"]
    assert train.groups is not None and len(train.groups.unique()) == 1623
    for members in train.task_members()[:5]:
        assert len(train.groups[members].unique()) > 10  # an alphabet holds many characters

"""The three datasets as families of tasks, statically binarized.

A dataset here is a set of 28x28 binary images, each belonging to one task (a class: a digit, a
garment, an Omniglot alphabet or character). The data root follows torchvision's download layout:
`MNIST/raw/`, `FashionMNIST/raw/` (IDX files) and `omniglot-py/images_{background,evaluation}.zip`
(or the folders they unpack to).

Static binarization: pixel j of the image named `key` (e.g. "mnist/train/123", or an Omniglot file's
path inside its zip) is 1 when `u < gray`, with gray the 8-bit intensity over 255 and u a uniform
number computed by the SplitMix64 hash of (crc32(key), j, seed). The bits depend only on the file
contents and the seed, not on machine, library version, load order or the split chosen. With
`binarization="threshold"` (`--binarize threshold`) a pixel is 1 where its gray level is at least
half the scale instead: no noise in the bits.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .files import UserError, atomic_path

DATASETS = ("mnist", "fashion-mnist", "omniglot")
PARTS = ("train", "test")
SPLITS = ("drawers", "background")
TASK_BY = ("class", "alphabet", "character")
BINARIZE_SEED = 0
BINARIZATIONS = ("sample", "threshold")
VALIDATION_SEED = 0  # every run with the same --validation holds out the same images
DATA_DIR_ENV = "PYROHVAE_DATA_DIR"
# Bump when the processing below changes, so stale caches are not reused.
_PROCESSING_VERSION = 1

_IDX = {
    "mnist": ("MNIST", "torchvision.datasets.MNIST"),
    "fashion-mnist": ("FashionMNIST", "torchvision.datasets.FashionMNIST"),
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip
_OMNIGLOT_DIR = "omniglot-py"
_OMNIGLOT_PARTS = ("images_background", "images_evaluation")
_OMNIGLOT_NAME = re.compile(r"^(images_\w+)/([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")
_OMNIGLOT_TRAIN_DRAWERS = range(1, 16)  # drawers 16-20 are the test part


class DataError(UserError):
    """Data that is missing or unreadable; the message names the folder or file."""


# The protocol's context of a task (`evaluate`): what the guide reads of it, up to this many images.
CONTEXT_SIZE = 100


def context_set(data: TaskData, task: int, generator: torch.Generator) -> torch.Tensor:
    """Up to CONTEXT_SIZE random items of one task, as a batch of one task (1, m, 1, 28, 28)."""
    members = data.task_members()[task]
    pick = members[torch.randperm(len(members), generator=generator)[:CONTEXT_SIZE]]
    return data.images[pick].float().unsqueeze(0)


def short_name(dataset: str) -> str:
    """A dataset as file names show it: its name, or its folder's."""
    return dataset if dataset in DATASETS else Path(dataset).name


def some_tasks(names: list[str], shown: int = 10) -> str:
    """The first `shown` task names, for an error that names what there is."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


@dataclass
class TaskData:
    """Binary images grouped into tasks."""

    images: torch.Tensor  # uint8 (n, 1, 28, 28), values in {0, 1}
    tasks: torch.Tensor  # int64 (n,), index into task_names
    task_names: list[str]
    name: str
    # Omniglot's alphabets as tasks: each image's character, so that a minibatch can be drawn from a
    # few characters of its alphabet (`--task-characters`); None for other datasets and groupings.
    groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def task_sizes(self) -> torch.Tensor:
        return torch.bincount(self.tasks, minlength=self.num_tasks)

    def task_members(self) -> list[torch.Tensor]:
        """Indices of the images of each task."""
        order = torch.argsort(self.tasks, stable=True)
        return list(torch.split(order, self.task_sizes().tolist()))

    def subset(self, index: torch.Tensor) -> TaskData:
        groups = None if self.groups is None else self.groups[index]
        return TaskData(self.images[index], self.tasks[index], self.task_names, self.name, groups)

    def hold_out(self, fraction: float, seed: int = VALIDATION_SEED) -> tuple[TaskData, TaskData]:
        """(kept, held out): `fraction` of every task's images, drawn at random by `seed`, held
        out (at least one of a task of two or more images), so every task is in both parts."""
        g = torch.Generator().manual_seed(seed)
        held = []
        for members in self.task_members():
            n = round(fraction * len(members))
            n = min(max(n, 1 if fraction > 0 else 0), len(members) - 1)
            held.append(members[torch.randperm(len(members), generator=g)[:n]])
        mask = torch.zeros(len(self), dtype=torch.bool)
        mask[torch.cat(held)] = True
        return self.subset(torch.nonzero(~mask).squeeze(1)), self.subset(torch.nonzero(mask).squeeze(1))

    def with_turns(self) -> TaskData:
        """These tasks, and each of them turned by 90°, 180° and 270° as a task of its own ("NAME
        turned 90"): four times the tasks, as few-shot work augments Omniglot's characters (Santoro
        et al. 2016, Vinyals et al. 2016): more tasks to learn how a task is read from its shots."""
        turns = range(4)
        return TaskData(
            torch.cat([self.images.rot90(k, (-2, -1)) for k in turns]),
            torch.cat([self.tasks + k * self.num_tasks for k in turns]),
            [name if k == 0 else f"{name} turned {90 * k}" for k in turns for name in self.task_names],
            self.name,
            None if self.groups is None else torch.cat([self.groups * 4 + k for k in turns]),
        )

    def without_tasks(self, names) -> TaskData:
        """The data of the other tasks, renumbered from 0."""
        unknown = sorted(set(names) - set(self.task_names))
        if unknown:
            raise DataError(
                f"{self.name} has no task {', '.join(map(repr, unknown))} "
                f"(tasks: {some_tasks(self.task_names)})"
            )
        kept = [i for i, n in enumerate(self.task_names) if n not in set(names)]
        remap = torch.full((self.num_tasks,), -1, dtype=torch.long)
        remap[kept] = torch.arange(len(kept))
        index = (remap[self.tasks] >= 0).nonzero().squeeze(1)
        return replace(
            self.subset(index), tasks=remap[self.tasks[index]], task_names=[self.task_names[i] for i in kept]
        )


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else $PYROHVAE_DATA_DIR, else ./data."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or "data")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyrohvae"


def load(
    dataset: str,
    part: str = "train",
    root: str | os.PathLike | None = None,
    split: str = "drawers",
    task_by: str | None = None,
    binarization: str = "sample",
) -> TaskData:
    """One part ("train" or "test") of a dataset, as tasks.

    Omniglot's `split` is "drawers" (every alphabet; drawers 1-15 train, 16-20 test) or
    "background" (Lake's 30 background alphabets train, the 20 evaluation alphabets test), and its
    tasks are alphabets (default) or characters. MNIST and Fashion-MNIST tasks are their classes.
    `binarization`: "sample" (the static Bernoulli draw above) or "threshold".
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if part not in PARTS:
        raise DataError(f"unknown part {part!r}; choose train or test")
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; choose one of {', '.join(BINARIZATIONS)}")
    root = data_root(root)
    if dataset == "omniglot":
        return _omniglot(root, part, split, task_by or "alphabet", binarization)
    if split != "drawers":
        raise DataError(f"--split {split} applies to omniglot only")
    if task_by not in (None, "class"):
        raise DataError(f"--task-by {task_by} applies to omniglot only")
    return _idx_dataset(dataset, root, part, binarization)


# --- static binarization -------------------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _bits(gray: np.ndarray, keys: list[str], binarization: str) -> np.ndarray:
    """uint8 gray levels (n, 28, 28) -> uint8 bits: `binarize`'s draw, or 1 from half the scale up."""
    return (gray >= 128).astype(np.uint8) if binarization == "threshold" else binarize(gray, keys)


def _cache_name(name: str, binarization: str) -> str:
    return name if binarization == "sample" else f"{name}-{binarization}"


def binarize(gray: np.ndarray, keys: list[str], seed: int = BINARIZE_SEED) -> np.ndarray:
    """gray: uint8 (n, 28, 28) -> uint8 bits, drawn once from Bernoulli(gray / 255)."""
    n = len(keys)
    pixels = gray.reshape(n, -1)
    ids = np.array([zlib.crc32(k.encode()) for k in keys], dtype=np.uint64)
    j = np.arange(pixels.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):  # the hash works modulo 2^64 on purpose
        counter = (ids[:, None] << np.uint64(16)) + j[None, :] + np.uint64(seed) * np.uint64(2**48)
        u = (_splitmix64(counter) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (u < pixels / 255.0).astype(np.uint8).reshape(gray.shape)


# --- cache -----------------------------------------------------------------------------------


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256(f"v{_PROCESSING_VERSION}-seed{BINARIZE_SEED}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached(name: str, files: list[Path], build):
    """build() -> dict of tensors, cached under the user's cache folder (never the data root)."""
    path = cache_dir() / f"{name}-{_fingerprint(files)}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # noqa: S110
            pass  # a damaged cache entry is rebuilt below
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
    except (OSError, RuntimeError):
        pass  # caching is an optimisation; an unwritable or full cache folder only costs time
    return value


# --- MNIST and Fashion-MNIST -------------------------------------------------------------------


def _idx_dataset(dataset: str, root: Path, part: str, binarization: str = "sample") -> TaskData:
    folder_name, _cls_name = _IDX[dataset]
    raw = root / folder_name / "raw"
    files = [raw / f for f in _IDX_FILES[part]]
    if not all(f.is_file() for f in files):
        _download_idx(dataset, root, raw, files)

    def build():
        from torchvision.datasets.mnist import read_image_file, read_label_file

        _check_idx(files[0], ndim=3)
        _check_idx(files[1], ndim=1)
        try:
            gray = read_image_file(str(files[0]))
            labels = read_label_file(str(files[1]))
        except Exception as e:
            raise DataError(f"{raw}: not readable IDX files ({_reason(e)})") from None
        if len(gray) != len(labels) or tuple(gray.shape[1:]) != (28, 28):
            raise DataError(
                f"{raw}: {files[0].name} holds {tuple(gray.shape)} images but "
                f"{files[1].name} holds {len(labels)} labels"
            )
        keys = [f"{dataset}/{part}/{i}" for i in range(len(gray))]
        bits = _bits(gray.numpy(), keys, binarization)
        return {"images": torch.from_numpy(bits).unsqueeze(1), "tasks": labels.long()}

    value = _cached(_cache_name(f"{dataset}-{part}", binarization), files, build)
    names = _FASHION_CLASSES if dataset == "fashion-mnist" else [str(d) for d in range(10)]
    return TaskData(value["images"], value["tasks"], list(names), f"{dataset}/{part}")


def _check_idx(path: Path, ndim: int) -> None:
    """The IDX header: magic 0x0000080N (unsigned bytes, N dims), then N sizes; the file holds
    exactly their product of bytes after the header."""
    expected = 0x00000800 + ndim
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX file ({len(header)} bytes, shorter than its header)")
    magic = int.from_bytes(header[:4], "big")
    if magic != expected:
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x} for an IDX file of {ndim}-d unsigned bytes "
            f"(expected 0x{expected:08x})"
        )
    sizes = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    want, have = 4 + 4 * ndim + math.prod(sizes), path.stat().st_size
    if have != want:
        raise DataError(
            f"{path}: {'truncated' if have < want else 'overlong'} IDX file: {have} bytes, "
            f"its header {tuple(sizes)} says {want}"
        )


def _download_idx(dataset, root, raw, files):
    import torchvision.datasets as tvd

    cls = tvd.MNIST if dataset == "mnist" else tvd.FashionMNIST
    created = _missing_dirs(raw)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cls(str(root), train=True, download=True)
    except Exception as e:
        _remove_empty(created)
        raise DataError(
            f"{dataset}: expected {', '.join(f.name for f in files)} in {raw} "
            f"and could not download them ({_reason(e)})"
        ) from None


# --- Omniglot ----------------------------------------------------------------------------------


def _omniglot(root: Path, part: str, split: str, task_by: str, binarization: str = "sample") -> TaskData:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if task_by not in ("alphabet", "character"):
        raise DataError(f"--task-by {task_by} does not apply to omniglot (alphabet or character)")
    everything = _omniglot_all(root, binarization)
    background = everything["background"].bool()
    if split == "drawers":
        in_train = torch.isin(everything["drawer"], torch.tensor(list(_OMNIGLOT_TRAIN_DRAWERS)))
    else:
        in_train = background
    keep = in_train if part == "train" else ~in_train
    names = everything["alphabets"] if task_by == "alphabet" else everything["characters"]
    label = everything["alphabet"] if task_by == "alphabet" else everything["character"]
    index = keep.nonzero().squeeze(1)
    present = torch.unique(label[index])  # tasks of this part only, renumbered from 0
    remap = torch.full((len(names),), -1, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    return TaskData(
        everything["images"][index],
        remap[label[index]],
        [names[i] for i in present.tolist()],
        f"omniglot/{part}",
        everything["character"][index] if task_by == "alphabet" else None,
    )


def _omniglot_sources(root: Path) -> list[Path]:
    folder = root / _OMNIGLOT_DIR
    sources = []
    for name in _OMNIGLOT_PARTS:
        zipped, unpacked = folder / f"{name}.zip", folder / name
        if zipped.is_file():
            sources.append(zipped)
        elif unpacked.is_dir():
            sources.append(unpacked)
        else:
            sources.append(_download_omniglot(folder, name))
    return sources


def _download_omniglot(folder: Path, name: str) -> Path:
    from torchvision.datasets import Omniglot
    from torchvision.datasets.utils import download_url

    created = _missing_dirs(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            download_url(f"{Omniglot.download_url_prefix}/{name}.zip", str(folder))
    except Exception as e:
        _remove_empty(created)
        raise DataError(
            f"omniglot: expected {', '.join(p + '.zip' for p in _OMNIGLOT_PARTS)} (or the folders "
            f"they unpack to) in {folder} and could not download {name}.zip ({_reason(e)})"
        ) from None
    return folder / f"{name}.zip"


def _omniglot_files(source: Path):
    """Yield (path inside the archive, PNG bytes) for every image of one Omniglot part."""
    if source.is_dir():
        for p in sorted(source.rglob("*.png")):
            yield f"{source.name}/{p.relative_to(source).as_posix()}", p.read_bytes
        return
    try:
        archive = zipfile.ZipFile(source)
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{source}: not a readable zip archive ({_reason(e)})") from None
    for n in names:
        yield n, lambda n=n: archive.read(n)


def _omniglot_all(root: Path, binarization: str = "sample") -> dict:
    sources = _omniglot_sources(root)

    def build():
        from PIL import Image

        keys, grays, alphabets, characters, drawers, background = [], [], [], [], [], []
        for source in sources:
            for name, read in _omniglot_files(source):
                m = _OMNIGLOT_NAME.match(name)
                if m is None:
                    continue
                part, alphabet, character, _, drawer = m.groups()
                try:
                    img = Image.open(io.BytesIO(read())).convert("L")
                except Exception as e:
                    raise DataError(f"{source}: cannot read {name} ({_reason(e)})") from None
                # Strokes are black on white: invert so strokes are 1. PIL resamples 8-bit images
                # in fixed-point arithmetic, so the gray levels are the same on every machine; a
                # box filter is the area average, the antialiasing that keeps thin strokes.
                small = Image.eval(img, lambda v: 255 - v).resize((28, 28), Image.Resampling.BOX)
                keys.append(name)
                grays.append(np.asarray(small, dtype=np.uint8))
                alphabets.append(alphabet)
                characters.append(f"{alphabet}/{character}")
                drawers.append(int(drawer))
                background.append(part == "images_background")
        if not keys:
            raise DataError(f"{root / _OMNIGLOT_DIR}: no Omniglot images found")
        bits = _bits(np.stack(grays), keys, binarization)
        alphabet_names = sorted(set(alphabets))
        character_names = sorted(set(characters))
        a_index = {n: i for i, n in enumerate(alphabet_names)}
        c_index = {n: i for i, n in enumerate(character_names)}
        return {
            "images": torch.from_numpy(bits).unsqueeze(1),
            "alphabet": torch.tensor([a_index[a] for a in alphabets]),
            "character": torch.tensor([c_index[c] for c in characters]),
            "drawer": torch.tensor(drawers),
            "background": torch.tensor(background, dtype=torch.uint8),
            "alphabets": alphabet_names,
            "characters": character_names,
        }

    files = [s for s in sources if s.is_file()] or sources
    return _cached(_cache_name("omniglot", binarization), files, build)


# --- helpers -----------------------------------------------------------------------------------


def _reason(e: BaseException) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def _missing_dirs(path: Path) -> list[Path]:
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(created: list[Path]) -> None:
    for d in created:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()

"""Folders of images as families of tasks: `PATH/<task>/<image>`, the layout of torchvision's
`ImageFolder` (whose `make_dataset` finds the files here).

Either `PATH/train/<task>/...` and `PATH/test/<task>/...` side by side, or one tree `PATH/<task>/...`
whose every task is split at random into a training and a test part (`test_fraction`, `test_seed`).
A task is a sub-folder: images anywhere below it belong to it. Hidden folders are ignored; files
that are not images (`.DS_Store`, `README.txt`) are skipped and counted.

Every image, whatever its size and mode, becomes a 28x28 binary image:
1. gray: 16-bit levels scaled to 8 bits, transparency laid on white, then PIL's "L" (ITU-R 601 luma);
2. padded to a square with its border's median level, so the shape is kept, then resized to 28x28
   by PIL's box filter (the area average, as for Omniglot; 8-bit images resample in fixed-point
   arithmetic, so the gray levels are the same on every machine);
3. bright on dark: inverted when the images of the folder are mostly light at their border (their
   median border level above one half), unless `invert` says;
4. statically binarized with the project's keyed binarization (`data.binarize`), keyed by the
   SHA-256 of the file's bytes: the same file gives the same bits in every run and every folder.

The fingerprint of a folder is the SHA-256 of its images' relative paths and contents; a run
records it, and a later command on changed files says so instead of scoring other data.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import DataError, TaskData, _reason, binarize, cache_dir
from .files import atomic_path

# torchvision's image extensions, and GIF, which PIL reads as well.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
DEFAULT_TEST_FRACTION = 0.2
# Bump when the processing above changes, so stale caches are not reused.
_PROCESSING_VERSION = 1


@dataclass
class _Tree:
    """The image files of one tree, by task, in a fixed (sorted) order."""

    root: Path
    files: list[Path]
    tasks: list[int]
    task_names: list[str]
    skipped: int  # files that are not images, or outside every task folder


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _scan(root: Path) -> _Tree:
    from torchvision.datasets.folder import make_dataset

    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not _hidden(e.name))
    loose = [e.name for e in os.scandir(root) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    if not names:
        if loose:
            raise DataError(
                f"{root}: images but no task folders; put each task's images in a folder of its own, "
                f"{root}/<task>/<image>"
            )
        raise DataError(f"{root}: no task folders (expected {root}/<task>/<image>)")
    seen = {}
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise DataError(
                f"{root}: tasks {other!r} and {name!r} differ only by case; rename one (on a "
                "case-insensitive file system they are one folder)"
            )
    skipped = len([e for e in os.scandir(root) if e.is_file()])  # beside the task folders: in no task

    def is_image(path: str) -> bool:
        nonlocal skipped
        parts = Path(path).relative_to(root).parts
        if any(_hidden(p) for p in parts[1:-1]):  # inside a hidden folder: ignored, not counted
            return False
        if _hidden(parts[-1]) or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            skipped += 1
            return False
        return True

    found = make_dataset(
        str(root), {n: i for i, n in enumerate(names)}, is_valid_file=is_image, allow_empty=True
    )
    tasks = [t for _, t in found]
    counts = np.bincount(tasks, minlength=len(names)) if tasks else np.zeros(len(names), dtype=int)
    if not found:
        raise DataError(f"{root}: no images in any task folder (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    few = [n for n, c in zip(names, counts) if c < 2]
    if few:
        raise DataError(
            f"{root}: task {few[0]!r} has {counts[names.index(few[0])]} image(s); every task needs "
            f"at least 2" + (f" ({len(few) - 1} more such tasks)" if len(few) > 1 else "")
        )
    return _Tree(root, [Path(p) for p, _ in found], tasks, names, skipped)


def _gray(img) -> np.ndarray:
    """A PIL image of any mode as 8-bit gray levels."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        levels = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or levels.max() > 255:
            levels = levels / 257.0  # 16-bit levels: 65535 -> 255
        return np.clip(np.rint(levels), 0, 255).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def read_image(path: Path) -> tuple[np.ndarray, float, str]:
    """One image file as 28x28 gray levels (not yet inverted), its border's mean level and the
    SHA-256 of its bytes; a file PIL cannot read, or only in part, is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        blob = Path(path).read_bytes()
        with Image.open(io.BytesIO(blob)) as img:
            img.load()  # decode it all now: a truncated file fails here, not later
            gray = _gray(img)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (not in a format PIL knows, or damaged)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({_reason(e)})") from None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    h, w = gray.shape
    side = max(h, w)
    square = np.full((side, side), int(np.median(border)), dtype=np.uint8)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = gray
    small = Image.fromarray(square).resize((28, 28), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8), float(border.mean()), hashlib.sha256(blob).hexdigest()


def polarity(borders: np.ndarray) -> bool:
    """Whether to invert images whose border levels are `borders`: when most are light."""
    return bool(np.median(borders) > 127.5)


def to_bits(grays: np.ndarray, digests: list[str], invert: bool) -> torch.Tensor:
    """28x28 gray levels (n, 28, 28) -> binary images (n, 1, 28, 28), bright on dark."""
    if invert:
        grays = 255 - grays
    return torch.from_numpy(binarize(grays, [f"file/{d}" for d in digests])).unsqueeze(1)


def _layout(path: Path) -> tuple[Path, Path | None]:
    """(training tree, test tree or None for one tree split at random)."""
    if not path.is_dir():
        raise DataError(
            f"{path}: no such folder (a dataset is one of mnist, fashion-mnist, omniglot or a folder "
            "of task folders)"
        )
    train, test = path / "train", path / "test"
    if train.is_dir() and test.is_dir():
        return train, test
    if train.is_dir() != test.is_dir():
        have, missing = ("train", "test") if train.is_dir() else ("test", "train")
        raise DataError(f"{path}: has {have}/ but no {missing}/; give both, or one tree of task folders")
    return path, None


@dataclass
class Folder:
    """A scanned folder: its trees, the images' processed gray levels, and its fingerprint."""

    path: Path
    trees: dict[str, _Tree]  # "train", and "test" where the folder has both
    grays: dict[str, np.ndarray]
    borders: dict[str, np.ndarray]
    digests: dict[str, list[str]]
    fingerprint: str

    @property
    def skipped(self) -> int:
        return sum(t.skipped for t in self.trees.values())

    def invert(self, invert: bool | None = None) -> bool:
        """`invert`, else one decision for the whole folder, from all its images' borders."""
        return polarity(np.concatenate(list(self.borders.values()))) if invert is None else invert

    def tree(self, name: str, invert: bool | None = None) -> TaskData:
        """Every image of one tree ("train", or "test" where the folder has one)."""
        t = self.trees[name]
        bits = to_bits(self.grays[name], self.digests[name], self.invert(invert))
        return TaskData(bits, torch.tensor(t.tasks), t.task_names, f"{self.path.name}/{name}")

    def part(self, part: str, invert: bool | None, test_fraction: float, test_seed: int) -> TaskData:
        """ "train" or "test": the tree of that name, or of one tree, the part of every task that
        `test_fraction` and `test_seed` give it."""
        if "test" in self.trees:
            return self.tree(part, invert)
        kept, held = self.tree("train", invert).hold_out(test_fraction, seed=test_seed)
        return held if part == "test" else kept

    def every_image(self, invert: bool | None = None) -> TaskData:
        """What a folder of outliers gives: its test tree where it has one, else all its images."""
        return self.tree("test" if "test" in self.trees else "train", invert)

    def describe(self, test_fraction: float | None = None) -> str:
        trees = ", ".join(
            f"{name}: {len(t.task_names)} tasks, {len(t.files)} images" for name, t in self.trees.items()
        )
        if "test" not in self.trees and test_fraction is not None:
            trees = (
                trees.replace("train: ", "")
                + f", {test_fraction:.0%} of each task's held out as the test part"
            )
        skipped = f"; {self.skipped} files skipped (not images, or in no task folder)" if self.skipped else ""
        return f"{self.path} ({trees}{skipped})"


def scan(path) -> Folder:
    """Read a folder of task folders (both trees where it has train/ and test/), every image
    processed once; cached by the files' contents under the user's cache folder."""
    path = Path(path).expanduser()
    train, test = _layout(path)
    trees = {"train": _scan(train)} | ({"test": _scan(test)} if test is not None else {})
    h = hashlib.sha256(f"v{_PROCESSING_VERSION}".encode())
    digests = {}
    for name, tree in trees.items():
        digests[name] = []
        for f in tree.files:
            try:
                digest = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError as e:
                raise DataError(f"{f}: cannot read ({e.strerror or e})") from None
            digests[name].append(digest)
            h.update(f"{f.relative_to(path).as_posix()}\0{digest}\0".encode())
    fingerprint = h.hexdigest()[:16]
    cached = cache_dir() / f"folder-{fingerprint}.pt"
    value = None
    if cached.exists():
        try:
            value = torch.load(cached, weights_only=True)
        except Exception:
            value = None  # a damaged cache entry is rebuilt below
    if value is None:
        value = {}
        for name, tree in trees.items():
            read = [read_image(f) for f in tree.files]
            value[name] = {
                "grays": torch.from_numpy(np.stack([r[0] for r in read])),
                "borders": torch.tensor([r[1] for r in read], dtype=torch.float64),
            }
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp:
                torch.save(value, tmp)
        except (OSError, RuntimeError):
            pass  # caching is an optimisation; an unwritable cache folder only costs time
    return Folder(
        path,
        trees,
        {n: v["grays"].numpy() for n, v in value.items()},
        {n: v["borders"].numpy() for n, v in value.items()},
        digests,
        fingerprint,
    )

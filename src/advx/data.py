"""Datasets as tensors resident on the device: uint8 images [N, C, H, W] and int64 labels [N].

MNIST, Fashion-MNIST and CIFAR-10 are read once through torchvision from `data_dir` (the layouts torchvision
expects: `<data_dir>/MNIST/raw/*-ubyte`, `<data_dir>/FashionMNIST/raw/*-ubyte`, `<data_dir>/cifar-10-batches-py/`),
then kept in memory. Batches are drawn
by `randperm` indices and converted to float in [0, 1] per batch; normalisation is the model's job.
A derived dataset (Ilyas et al. 2019; `advx construct`) has float32 training images and borrows the clean
test split of the dataset it was derived from.

Held-out data that no run may train on (the spheres' test and validation sets, the synthetic dataset) is drawn
from `runtime.held_out_generator` streams, which no run seed can replay.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from advx.errors import ConfigError, DataError, first_line, shown
from advx.runtime import held_out_generator

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")  # MNIST's layout, which Fashion-MNIST shares
SYNTHETIC_STREAM = 1  # held-out stream of the synthetic dataset: one fixed dataset whatever the run's seed
SPHERES_STREAM = 1234  # held-out stream of the spheres' test and validation sets


@dataclass(frozen=True)
class ImageFiles:
    """An image dataset on disk, read through torchvision: where under data_dir and what it holds."""

    title: str  # as torchvision and the papers spell it
    folder: str  # torchvision's layout under data_dir
    shape: tuple[int, int, int]  # one image [C, H, W]
    torchvision_class: str
    idx: bool = True  # the four IDX files (uint8 tensors); False: CIFAR's pickled python batches (numpy HWC)


IMAGE_DATASETS = {  # the names are dataset.name's; schema.DATASET_CLASSES holds their label counts
    "mnist": ImageFiles("MNIST", "MNIST/raw", (1, 28, 28), "MNIST"),
    "fashion_mnist": ImageFiles("Fashion-MNIST", "FashionMNIST/raw", (1, 28, 28), "FashionMNIST"),
    "cifar10": ImageFiles("CIFAR-10", "cifar-10-batches-py", (3, 32, 32), "CIFAR10", idx=False),
}


@dataclass
class Split:
    """One split on the device: `images` [N, C, H, W], uint8 pixels (or float32 for preprocessed data such as
    GCN+ZCA), and `labels` int64 [N] in [0, num_classes)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxed: bool = True  # pixels in [0, 1], where attacks may clip; False for GCN+ZCA and spheres

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images [B, C, H, W] (in [0, 1] for pixel data) and labels [B] for the given indices."""
        images = self.images[index]
        return (images.float().div_(255) if images.dtype == torch.uint8 else images), self.labels[index]

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All examples once, in `randperm` order when a generator is given, else in order."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(self.labels.device)
        for start in range(0, n, batch_size):
            yield self.batch(order[start:start + batch_size])

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.images[:n], self.labels[:n], self.boxed)


@dataclass
class SphereStream:
    """Training data drawn fresh for every batch (Gilmer et al. 2018): points uniform on the unit sphere (class
    0) or the sphere of radius `radius_outer` (class 1) in R^dim. One pass ("epoch") is `samples` points."""

    dim: int
    radius_outer: float
    samples: int
    device: torch.device
    boxed: bool = False  # points on spheres: no [0, 1] box

    def __len__(self) -> int:
        return self.samples

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from advx.spheres import sample_spheres

        for start in range(0, self.samples, batch_size):
            yield sample_spheres(min(batch_size, self.samples - start), self.dim, self.radius_outer, generator,
                                 self.device)


@dataclass
class Dataset:
    name: str
    train: Split | SphereStream
    val: Split | None
    test: Split
    num_classes: int
    mean: list[float]  # per channel, of the training images in [0, 1]
    std: list[float]

    @property
    def boxed(self) -> bool:
        """True when inputs live in the [0, 1] box (attacks and training regimes may clip)."""
        return self.test.boxed

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.test.images.shape[1:])


def require_box(clip: bool, data: Split | SphereStream | Dataset, key: str) -> None:
    """Refuse clip=True on data without a [0, 1] box (GCN+ZCA, spheres), where clipping would silently cut the
    eps ball with a box the data does not live in. `key` names the setting in the one-line ConfigError."""
    if clip and not data.boxed:
        raise ConfigError(f"{key}=true clips to the [0, 1] box, but this data has none (GCN+ZCA preprocessing or "
                          f"spheres); set {key}=false")


def describe(cfg) -> tuple[tuple[int, ...], int]:
    """The input shape and number of classes of the dataset a `DatasetConfig` describes, without reading its
    images: what a job checks before it starts. DataError when the files it needs are not there."""
    if cfg.name == "spheres":
        return (cfg.dim,), 2
    if cfg.name == "synthetic":
        shape, labels = ((1, 28, 28) if cfg.shape == "mnist" else (3, 32, 32)), cfg.num_classes
    elif cfg.name == "derived":
        from advx.derived import derived_origin
        from advx.schema import DatasetConfig

        origin = derived_origin(Path(cfg.path)) or {"name": cfg.base}
        shape, labels = describe(DatasetConfig(**{**origin, "data_dir": cfg.data_dir, "download": cfg.download,
                                                  "val_size": 0}))
    else:
        _require_files(cfg.name, Path(cfg.data_dir), cfg.download)
        shape, labels = IMAGE_DATASETS[cfg.name].shape, cfg.labels()
    if cfg.classes:
        cfg.check_classes(labels)
        labels = len(cfg.classes)
    return shape, labels


def load_dataset(cfg, device: torch.device) -> Dataset:
    """Load the dataset described by a `DatasetConfig` onto `device`, with its subsets and splits applied."""
    if cfg.name == "spheres":
        return _spheres(cfg, device)
    held_out = None
    if cfg.name in IMAGE_DATASETS:
        (train_x, train_y), (test_x, test_y) = _read_images(cfg.name, Path(cfg.data_dir), cfg.download)
        num_classes = cfg.labels()
    elif cfg.name == "derived":
        (train_x, train_y), (test_x, test_y), num_classes, held_out = _read_derived(cfg)
    else:
        (train_x, train_y), (test_x, test_y) = synthetic(cfg.shape, cfg.num_classes,
                                                         cfg.train_size or 512, cfg.test_size or 256)
        num_classes = cfg.num_classes
    if cfg.name != "synthetic":  # on-disk data: asking for more examples than there are is a mistake, not "all"
        sizes = (("train_size", cfg.train_size, len(train_y)), ("test_size", cfg.test_size, len(test_y)))
        for key, size, have in sizes:
            if size is not None and size > have:
                raise ConfigError(f"dataset.{key}={size} exceeds the {have} examples of {cfg.name}; use null for all")
    if cfg.classes:
        (train_x, train_y), (test_x, test_y) = (_keep_classes(x, y, cfg.classes)
                                                for x, y in ((train_x, train_y), (test_x, test_y)))
        num_classes = len(cfg.classes)
    train_x, train_y = train_x[:cfg.train_size], train_y[:cfg.train_size]
    test_x, test_y = test_x[:cfg.test_size], test_y[:cfg.test_size]
    if cfg.val_size >= len(train_y):
        raise DataError(f"dataset.val_size={cfg.val_size} leaves no training data ({len(train_y)} examples)")
    if cfg.preprocess == "gcn_zca":
        train_x, test_x = gcn_zca(train_x[:len(train_x) - cfg.val_size], train_x, test_x)
    boxed = cfg.preprocess != "gcn_zca"  # the whitened space has no [0, 1] box
    val = None
    if held_out is not None and not cfg.val_size:  # derived data: its source's held-out images, untouched
        val = Split(held_out.images.to(device), held_out.labels.to(device), held_out.boxed)
    if cfg.val_size:
        val = Split(train_x[-cfg.val_size:].to(device), train_y[-cfg.val_size:].to(device), boxed)
        train_x, train_y = train_x[:-cfg.val_size], train_y[:-cfg.val_size]
    pixels = train_x.float().div(255) if train_x.dtype == torch.uint8 else train_x
    dims = [0, 2, 3]
    return Dataset(
        name=cfg.name,
        train=Split(train_x.to(device), train_y.to(device), boxed),
        val=val,
        test=Split(test_x.to(device), test_y.to(device), boxed),
        num_classes=num_classes,
        mean=pixels.mean(dim=dims).tolist(),
        std=pixels.std(dim=dims).clamp_min(1e-3).tolist(),
    )


def _spheres(cfg, device: torch.device) -> Dataset:
    """Fresh training samples every batch (from the run's generator); fixed val and test sets from the held-out
    stream, which no run seed replays."""
    from advx.spheres import sample_spheres

    generator = held_out_generator(SPHERES_STREAM)
    test = Split(*sample_spheres(cfg.test_size or 10000, cfg.dim, cfg.radius_outer, generator, device), boxed=False)
    val = None
    if cfg.val_size:
        val = Split(*sample_spheres(cfg.val_size, cfg.dim, cfg.radius_outer, generator, device), boxed=False)
    stream = SphereStream(cfg.dim, cfg.radius_outer, cfg.train_size or 100_000, device)
    return Dataset("spheres", stream, val, test, 2, mean=[0.0], std=[1.0])


def _read_derived(cfg):
    """A derived dataset's training images and labels, with the clean test split of the dataset it came from and
    the validation split its source held out (None when it held none; on the CPU, moved with the rest)."""
    from advx.derived import read_derived
    from advx.schema import DatasetConfig

    images, labels, source = read_derived(Path(cfg.path))
    base = dict(source) if source else {"name": cfg.base, "val_size": 0}  # released files: no held-out split
    base.update(data_dir=cfg.data_dir, download=cfg.download)  # where the files are now
    origin = load_dataset(DatasetConfig(**base), torch.device("cpu"))
    if images.shape[1:] != origin.input_shape or int(labels.max()) >= origin.num_classes:
        raise DataError(f"derived dataset {cfg.path} does not match {origin.name}'s test split: images "
                        f"{tuple(images.shape[1:])} vs {origin.input_shape}, labels up to {int(labels.max())} "
                        f"for {origin.num_classes} classes")
    return (images, labels), (origin.test.images, origin.test.labels), origin.num_classes, origin.val


def _keep_classes(images: torch.Tensor, labels: torch.Tensor, classes: list[int]):
    mask = torch.isin(labels, torch.tensor(classes))
    relabel = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    return images[mask], relabel[labels[mask]]


def dataset_files(name: str, data_dir: str | Path) -> list[Path]:
    """The files dataset `name` reads from `data_dir` (none for generated data: synthetic, spheres)."""
    if name not in IMAGE_DATASETS:
        return []
    folder = Path(data_dir) / IMAGE_DATASETS[name].folder
    if IMAGE_DATASETS[name].idx:
        return [folder / file for file in IDX_FILES]
    return sorted(folder.glob("*_batch*")) if _is_dir(folder) else [folder / "data_batch_1"]


def _require_files(name: str, root: Path, download: bool) -> None:
    """One DataError line saying where the files of image dataset `name` were expected, unless they are there
    (or will be downloaded)."""
    source = IMAGE_DATASETS[name]
    folder = root / source.folder
    if source.idx:
        missing = ", ".join(path.name for path in dataset_files(name, root) if not _is_file(path))
    else:
        missing = "" if _is_dir(folder) else "the python batches"
    if missing and not download:
        raise DataError(
            f"{source.title} not found: expected {missing} in {shown(folder.absolute())}. Point dataset.data_dir=... "
            f"or ADVX_DATA_DIR at the folder that holds {source.folder}/, or set dataset.download=true when online."
        )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the filesystem, say: not there either
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _read_images(name: str, root: Path, download: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images [N, C, H, W], int64 labels [N]) of the train and test splits of image dataset `name`, or one
    DataError line that says where the files were expected or that they are damaged."""
    import torchvision.datasets

    source = IMAGE_DATASETS[name]
    _require_files(name, root, download)
    dataset_class = getattr(torchvision.datasets, source.torchvision_class)
    try:
        splits = [dataset_class(str(root), train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read {source.title} from {shown((root / source.folder).absolute())}: "
                        f"{first_line(error)}; the files are damaged or incomplete, copy them again") from None
    if source.idx:  # uint8 [N, H, W] tensors
        return [(s.data.unsqueeze(1).contiguous(), s.targets.long()) for s in splits]
    return [(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(s.targets)) for s in splits]


def synthetic(shape: str, num_classes: int, train_size: int, test_size: int):
    """A learnable toy dataset: smooth random class prototypes plus pixel noise, as uint8 images.

    shape: "mnist" -> [N, 1, 28, 28], "cifar" -> [N, 3, 32, 32]. Balanced labels; one fixed dataset whatever the
    run's seed (drawn from the held-out seed, so a run's own generator never replays its test split).
    """
    channels, side = (1, 28) if shape == "mnist" else (3, 32)
    generator = held_out_generator(SYNTHETIC_STREAM)
    coarse = torch.rand(num_classes, channels, 7, 7, generator=generator)
    prototypes = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        noise = torch.rand(n, channels, side, side, generator=generator)
        images = 0.6 * prototypes[labels] + 0.4 * noise  # prototypes dominate: learnable, but not trivially
        return (images * 255).round().to(torch.uint8), labels

    return draw(train_size), draw(test_size)


def augment(x: torch.Tensor, mode: str, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation of a batch x [B, C, H, W]: random shifts of up to `padding` pixels with zero fill
    ("crop": pad-and-random-crop), and for "crop_flip" random horizontal flips too (the CIFAR-10 convention of
    Ilyas et al. 2019); "none" returns x. The random draws come from `generator` (CPU), so resumes replay them."""
    if mode == "none":
        return x
    b, _, h, w = x.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None] + shifts[0][:, None]  # [B, H] rows of the padded image
    cols = torch.arange(w, device=x.device)[None] + shifts[1][:, None]  # [B, W]
    if mode == "crop_flip":
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    padded = torch.nn.functional.pad(x, (padding,) * 4).permute(0, 2, 3, 1)  # [B, H + 2p, W + 2p, C]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def global_contrast_normalize(x: torch.Tensor, scale: float = 55.0, eps: float = 1e-8) -> torch.Tensor:
    """Per image: subtract its mean, rescale to norm `scale` (pylearn2's GCN as in the maxout CIFAR recipe).
    x: [N, D] float; returns [N, D]."""
    x = x - x.mean(dim=1, keepdim=True)
    return scale * x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def gcn_zca(fit_on: torch.Tensor, *splits: torch.Tensor, bias: float = 0.1) -> list[torch.Tensor]:
    """GCN then ZCA whitening fit on `fit_on` (pylearn2's filter_bias 0.1), applied to each split.

    Inputs uint8 [N, C, H, W]; outputs float32 [N, C, H, W] in the whitened space (no [0, 1] box), where
    Goodfellow et al. (2015) measure CIFAR-10 FGSM at eps 0.1. Float32 throughout: the 3072 x 3072
    eigendecomposition takes seconds instead of minutes, and the 0.1 bias keeps it well conditioned.
    """
    def flat(x: torch.Tensor) -> torch.Tensor:
        return global_contrast_normalize(x.flatten(1).float() / 255)

    fit = flat(fit_on)
    mean = fit.mean(0)
    covariance = (fit - mean).T @ (fit - mean) / len(fit)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    whiten = eigenvectors @ torch.diag((eigenvalues.clamp_min(0) + bias).rsqrt()) @ eigenvectors.T
    return [((flat(x) - mean) @ whiten).view(x.shape) for x in splits]

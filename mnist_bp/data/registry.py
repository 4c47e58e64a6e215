"""Registry of the datasets mnist-bp knows: file names, official checksums and mirrors.

All three share MNIST's IDX format: 28x28 uint8 images, labels 0..9, 60,000 training and
10,000 test images. Checksums are of the official `.gz` files. SHA-256 where a public record
gives it (TensorFlow Datasets' url_checksums for all three; the MNIST values are also recorded
by Ludwig), MD5 (torchvision's records) kept beside it for reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnist_bp.errors import UserError

IMAGE_SIDE = 28  # every image is IMAGE_SIDE x IMAGE_SIDE uint8
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784: the network's input size
NUM_CLASSES = 10  # labels 0..9
DIGITS = tuple(str(d) for d in range(NUM_CLASSES))

# The four files, keyed by the role they play.
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
FILENAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class FileSpec:
    """One official file: its name, its checksum (`algorithm` is "sha256" or "md5") and size."""

    filename: str
    algorithm: str
    checksum: str
    size: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: name, the four files by role, and base URLs in the order to try them."""

    name: str
    files: dict[str, FileSpec]
    mirrors: tuple[str, ...]
    description: str = ""
    classes: tuple[str, ...] = DIGITS  # what labels 0..9 mean


def _spec(name, description, mirrors, sha256, sizes, classes=DIGITS):
    files = {
        role: FileSpec(FILENAMES[role], "sha256", digest, size)
        for role, digest, size in zip(ROLES, sha256, sizes, strict=True)
    }
    return DatasetSpec(name, files, tuple(mirrors), description, tuple(classes))


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "mnist",
            "handwritten digits (LeCun, Cortes, Burges)",
            # torchvision's first mirror, then TensorFlow Datasets', then the original site
            # last: it often answers 403/404 today.
            [
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ],
            [
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ],
            [9912422, 28881, 1648877, 4542],
        ),
        _spec(
            "fashion-mnist",
            "Zalando article images (MD5s: 8d4fb7e6…, 25c81989…, bef4ecab…, bb300cfd…)",
            ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
            [
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ],
            [26421880, 29515, 4422102, 5148],
            # the dataset's README, label by label
            ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"],
        ),
        _spec(
            "kmnist",
            "Kuzushiji-MNIST, cursive Japanese (MD5s: bdb82020…, e144d726…, 5c965bf0…, 7320c461…)",
            ["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
            [
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
            ],
            [18165135, 29497, 3041136, 5120],
            # the dataset's kmnist_classmap.csv: hiragana, romanised
            ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
        ),
    )
}


def class_names(dataset: str | None) -> tuple[str, ...]:
    """What labels 0..9 stand for in `dataset` (the digits themselves when unknown)."""
    spec = DATASETS.get(dataset or "")
    return spec.classes if spec else DIGITS


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset called `name`, or a UserError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise UserError(f"unknown dataset '{name}': choose one of {known}") from None

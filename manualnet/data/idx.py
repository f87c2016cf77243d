"""MNIST and Fashion-MNIST from their four IDX files in the directory ``root``, gzipped or not.

Missing files are downloaded from the usual mirrors (short timeout, MD5-checked) unless ``download: false``;
when that fails (offline), the DataError says which files to put in which directory. The t10k files are the
data set's own test split (``Arrays.test``): ``load_dataset`` keeps it as the test split when
``test_fraction`` is 0, and otherwise pools all 70000 images and splits them at random like any data set.
"""

import gzip
import hashlib
import http.client
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from manualnet.data.base import DATASETS, Arrays
from manualnet.errors import DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
}

MD5 = {  # of the .gz files the mirrors serve, as published with the data sets (and in torchvision)
    "mnist": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
              "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
    "fashion_mnist": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
}

TIMEOUT_S = 10  # per connection attempt and per read: an offline machine fails fast, a slow mirror is skipped

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """The array an IDX file holds: magic 00 00 <type> <ndim>, ndim big-endian uint32 sizes, then the data.

    ``path`` may be gzipped (recognised by its content). A bad magic number, a corrupt gzip stream or a
    data length that disagrees with the header is a DataError naming the file.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file: magic number {raw[:4].hex() or 'missing'}, expected 0000 "
                        f"followed by a type byte ({', '.join(f'{t:02x}' for t in IDX_TYPES)}) and the rank")
    ndim, dtype = raw[3], np.dtype(IDX_TYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header: {len(raw)} bytes, a rank-{ndim} header needs {header}")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        problem = "truncated" if len(raw) - header < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: header says shape {shape} ({expected} bytes of data), "
                        f"the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def fetch(url, dest, md5):
    """Download ``url`` to ``dest`` if its MD5 is ``md5``; OSError, ValueError or HTTPException otherwise."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        data = response.read()
    got = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if got != md5:
        raise ValueError(f"{url}: MD5 {got}, expected {md5}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")  # a crash mid-write never leaves a half file under the real name
    part.write_bytes(data)
    part.replace(dest)


def download(name, directory, missing):
    """Fetch each of the ``missing`` base file names of data set ``name`` into ``directory`` as .gz files,
    trying every mirror in turn; OSError saying why, for the first file that no mirror served."""
    md5 = dict(zip(FILES, MD5[name], strict=True))
    for base in missing:
        reasons = []
        for mirror in MIRRORS[name]:
            print(f"manualnet: downloading {mirror}{base}.gz", file=sys.stderr)
            try:
                fetch(f"{mirror}{base}.gz", directory / f"{base}.gz", md5[base])
                break
            except (OSError, ValueError, http.client.HTTPException) as e:
                reasons.append((mirror, " ".join(str(e).split()) or type(e).__name__))
        else:
            if len({why for _, why in reasons}) == 1:  # offline: every mirror fails the same way
                raise OSError(f"{reasons[0][1]} from all {len(reasons)} mirrors")
            raise OSError("; ".join(f"{mirror}: {why}" for mirror, why in reasons))


def find_files(directory):
    """{base name: path} of the IDX files present in ``directory`` (``base`` or ``base.gz``)."""
    found = {}
    for base in FILES:
        for candidate in (directory / base, directory / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
    return found


def locate(name, directory, download_missing):
    """{base name: path} of all four files, downloading the missing ones if allowed; else a DataError
    saying which files to put where."""
    found = find_files(directory)
    missing = [base for base in FILES if base not in found]
    if not missing:
        return found
    reason = "download: false"
    if download_missing:
        try:
            download(name, directory, missing)
        except (OSError, ValueError, http.client.HTTPException) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
    found = find_files(directory)
    missing = [base for base in FILES if base not in found]
    if missing:
        raise DataError(f"{name}: missing {', '.join(missing)} in {directory.resolve()} and could not download "
                        f"them ({reason}); put {', '.join(f + '.gz' for f in missing)} (gzipped or not) "
                        f"in {directory.resolve()}")
    return found


def load_idx_set(name, root, download_missing):
    """Arrays of the 60000 train images ((N, 1, H, W), scaled to [0, 1], float32) and labels of data set
    ``name``, with the 10000 t10k ones as its own test split."""
    found = locate(name, Path(root).expanduser(), download_missing)
    splits, size = [], None
    for image_file, label_file in (FILES[:2], FILES[2:]):
        images = _images(read_idx(found[image_file]), found[image_file], size)
        size = images.shape[1:]
        labels = _labels(read_idx(found[label_file]), len(images), found[label_file])
        x = images[:, None].astype(np.float32) / 255  # one channel; float32: MNIST is 220 MB as float64
        splits.append((torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))))
    (x, y), test = splits
    return Arrays(x, y, "classification", 10, test=test)


def _images(images, path, size):
    """``images`` if they are (N, H, W) uint8 with (H, W) == ``size`` (the train images' size, once known)."""
    if images.ndim != 3 or images.dtype != np.uint8 or (size is not None and images.shape[1:] != size):
        expected = f"(N, {size[0]}, {size[1]})" if size else "(N, height, width)"
        raise DataError(f"{path}: expected uint8 images of shape {expected}, got {images.dtype} of shape "
                        f"{images.shape}")
    return images


def _labels(labels, n_images, path):
    if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != n_images:
        raise DataError(f"{path}: expected {n_images} uint8 labels (one per image), got {labels.dtype} of shape "
                        f"{labels.shape}")
    if labels.max(initial=0) > 9:
        raise DataError(f"{path}: labels must be classes 0..9, found {int(labels.max())}")
    return labels


@DATASETS.register("mnist")
def mnist(root: str = "data/mnist", download: bool = True) -> Arrays:
    """MNIST handwritten digits, files in ``root``. x: (60000, 1, 28, 28) in [0, 1]; y: (60000,) digit 0..9;
    test: the (10000, 1, 28, 28) and (10000,) t10k images and labels."""
    return load_idx_set("mnist", root, download)


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: str = "data/fashion_mnist", download: bool = True) -> Arrays:
    """Zalando's Fashion-MNIST, files in ``root``. x: (60000, 1, 28, 28) in [0, 1]; y: (60000,) class 0..9;
    test: the (10000, 1, 28, 28) and (10000,) t10k images and labels."""
    return load_idx_set("fashion_mnist", root, download)

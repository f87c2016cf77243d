import gzip
import inspect
import io
import itertools
import math
import urllib.error

import numpy as np
import pytest
import torch

from manualnet.data import COMMON_KEYS, DATASETS, Batches, Standardizer, idx, load_dataset, loader_arguments, synthetic
from manualnet.errors import ConfigError, DataError

# -- helpers --------------------------------------------------------------------------------------------


def write_idx(path, array, gz):
    """An IDX file as MNIST ships it: 00 00 08 <ndim>, big-endian sizes, then the uint8 data."""
    raw = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_idx_set(directory, n_train=5, n_test=3, gz=(True, False, False, True), size=28):
    """A tiny stand-in for the four MNIST files (random pixels, labels 0..9, some gzipped);
    returns (train images, train labels, test images, test labels)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (n_train, size, size)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, size, size)), rng.integers(0, 10, n_test))
    for base, array, zipped in zip(idx.FILES, arrays, gz, strict=True):
        write_idx(directory / (base + ".gz" if zipped else base), array, zipped)
    return arrays


def write_npz(path, n=20, **extra):
    x = np.arange(n * 6, dtype=np.float64).reshape(n, 2, 3)
    np.savez(path, x=x, y=np.arange(n) % 3, **extra)
    return path


def write_csv(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def file_args(tmp_path_factory):
    """The smallest valid keyword arguments of each built-in loader that needs a file."""
    root = tmp_path_factory.mktemp("data")
    write_idx_set(root / "mnist")
    write_idx_set(root / "fashion_mnist")
    csv_text = "a,b,label\n" + "".join(f"{i},{i * i},{'cat' if i % 2 else 'dog'}\n" for i in range(10))
    return {"mnist": {"root": str(root / "mnist"), "download": False},
            "fashion_mnist": {"root": str(root / "fashion_mnist"), "download": False},
            "npz": {"path": str(write_npz(root / "user.npz"))},
            "csv": {"path": str(write_csv(root / "user.csv", csv_text)), "label": "label"}}


# Built-in loaders with default arguments: (N, in_features, out_features, task).
EXPECTED = {"digits": (1797, 64, 10, "classification"), "spirals": (600, 2, 3, "classification"),
            "moons": (500, 2, 2, "classification"), "xor": (400, 2, 2, "classification"),
            "linear_regression": (500, 5, 1, "regression"), "mnist": (8, 784, 10, "classification"),
            "fashion_mnist": (8, 784, 10, "classification"), "npz": (20, 6, 3, "classification"),
            "csv": (10, 2, 2, "classification")}


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"dataset": "digits", "standardize": False}, seed=0, dtype=torch.float64)


# -- every loader ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_loader_gives_float_features_and_labels_of_its_task(name, file_args):
    data = load_dataset({"dataset": name, **file_args.get(name, {})}, seed=3, dtype=torch.float64)
    sizes = [len(data.x_train), len(data.x_val), len(data.x_test)]
    tokens = bool(data.inferred_sizes())  # a language model's data: token ids in, the next ids as labels
    for x, y in (data.split(s) for s in ("train", "val", "test")):
        assert x.dtype == (torch.int64 if tokens else torch.float64) and len(y) == len(x)
        assert tokens or x[0].numel() == data.in_features
        if data.task == "classification":
            assert y.dtype == torch.int64 and y.ndim == (2 if tokens else 1)
            assert data.out_features == data.num_classes and y.min() >= 0 and y.max() < data.num_classes
        else:
            assert data.task == "regression" and data.num_classes is None
            assert y.dtype == torch.float64 and y.shape[1:] == (data.out_features,)
    assert tokens or (sizes[1] == round(0.1 * sum(sizes)) and sizes[2] == round(0.2 * sum(sizes)))
    if name in EXPECTED:
        assert (sum(sizes), data.in_features, data.out_features, data.task) == EXPECTED[name]


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_loader_signature_documents_its_config_keys(name):
    params = inspect.signature(DATASETS.get(name)).parameters
    for key, param in params.items():
        assert param.annotation is not param.empty, f"{name}.{key} has no type annotation"
    assert set(loader_arguments(name)) == set(params) - {"generator"} - set(COMMON_KEYS)  # text splits itself


def test_digits_are_sklearns_8x8_images_scaled_to_unit_range(digits):
    x = torch.cat([digits.x_train, digits.x_val, digits.x_test])
    y = torch.cat([digits.y_train, digits.y_val, digits.y_test])
    assert x.shape == (1797, 1, 8, 8) and x.min() == 0 and x.max() == 1
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_spiral_points_lie_on_their_arm_without_noise():
    arrays = DATASETS.get("spirals")(n_samples=90, arms=3, noise=0.0, generator=torch.Generator().manual_seed(0))
    r = arrays.x.norm(dim=1)
    angle = torch.atan2(arrays.x[:, 0], arrays.x[:, 1])
    expected = 2 * math.pi * arrays.y / 3 + synthetic.SWEEP * r
    assert torch.bincount(arrays.y).tolist() == [30, 30, 30]
    assert torch.allclose(torch.remainder(angle - expected + math.pi, 2 * math.pi), torch.full_like(r, math.pi))


def test_moons_are_two_unit_half_circles_without_noise():
    arrays = DATASETS.get("moons")(n_samples=100, noise=0.0, generator=torch.Generator().manual_seed(0))
    upper, lower = arrays.x[arrays.y == 0], arrays.x[arrays.y == 1]
    assert torch.allclose(upper.norm(dim=1), torch.ones(50, dtype=torch.float64)) and (upper[:, 1] >= 0).all()
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose((lower - centre).norm(dim=1), torch.ones(50, dtype=torch.float64))


def test_xor_labels_are_xor_of_coordinate_signs_without_noise():
    arrays = DATASETS.get("xor")(n_samples=200, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(arrays.y, ((arrays.x[:, 0] > 0) ^ (arrays.x[:, 1] > 0)).long())
    assert 80 < arrays.y.sum() < 120


def test_linear_regression_residual_has_the_requested_noise():
    data = load_dataset({"dataset": "linear_regression", "n_samples": 4000, "n_features": 3, "n_outputs": 2,
                         "noise": 0.5, "standardize": False}, seed=1, dtype=torch.float64)
    x = torch.cat([data.x_train, torch.ones(len(data.x_train), 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(x, data.y_train).solution
    residual = data.y_train - x @ coef
    assert data.y_train.shape == (2800, 2) and data.out_features == 2
    assert torch.allclose(residual.std(dim=0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.03)


def test_synthetic_data_is_a_function_of_the_seed():
    one, same, other = (load_dataset({"dataset": "spirals"}, seed=s).x_train for s in (5, 5, 6))
    assert torch.equal(one, same) and not torch.equal(one, other)


# -- splits and standardisation -------------------------------------------------------------------------


def test_splits_are_disjoint_and_cover_every_sample(tmp_path):
    path = write_npz(tmp_path / "d.npz", n=50)
    data = load_dataset({"dataset": "npz", "path": str(path), "val_fraction": 0.2, "test_fraction": 0.3,
                         "standardize": False}, seed=0, dtype=torch.float64)
    ids = [(x.flatten(1)[:, 0] / 6).long().tolist() for x in (data.x_train, data.x_val, data.x_test)]
    assert [len(i) for i in ids] == [25, 10, 15]
    assert sorted(ids[0] + ids[1] + ids[2]) == list(range(50))
    assert torch.equal(data.y_val, torch.tensor(ids[1]) % 3)  # each label stays with its sample


def test_same_seed_gives_same_split_and_another_seed_another(digits):
    again = load_dataset({"dataset": "digits", "standardize": False}, seed=0, dtype=torch.float64)
    other = load_dataset({"dataset": "digits", "standardize": False}, seed=1, dtype=torch.float64)
    assert torch.equal(again.x_test, digits.x_test) and torch.equal(again.y_train, digits.y_train)
    assert not torch.equal(other.x_test, digits.x_test)


def test_standardisation_uses_train_statistics_only(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (200, 3))
    x[:, 2] = 7.0  # constant: only centred
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(200) % 2)
    cfg = {"dataset": "npz", "path": str(tmp_path / "d.npz")}
    raw = load_dataset({**cfg, "standardize": False}, seed=2, dtype=torch.float64)
    data = load_dataset(cfg, seed=2, dtype=torch.float64)
    mean, std = raw.x_train.mean(0), raw.x_train.std(0, unbiased=False)
    std[2] = 1.0
    for split in ("train", "val", "test"):
        assert torch.allclose(data.split(split)[0], (raw.split(split)[0] - mean) / std)
    assert torch.allclose(data.x_train[:, :2].std(0, unbiased=False), torch.ones(2, dtype=torch.float64))
    assert data.x_val[:, :2].mean(0).abs().min() > 1e-6  # val statistics were not used
    assert torch.allclose(data.standardizer.mean, mean) and torch.allclose(data.standardizer.std, std)


def test_standardizer_state_dict_reapplies_the_same_transform():
    x = torch.randn(30, 4, dtype=torch.float64) * 5 + 2
    fitted = Standardizer.fit(x)
    restored = Standardizer.from_state_dict(fitted.state_dict())
    assert torch.equal(restored.apply(x), fitted.apply(x))
    assert torch.allclose(fitted.apply(x).mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_load_dataset_moves_tensors_to_the_requested_dtype():
    data = load_dataset({"dataset": "linear_regression"}, seed=0, device="cpu", dtype=torch.float32)
    assert data.x_val.dtype == data.y_test.dtype == data.standardizer.mean.dtype == torch.float32
    assert data.summary()["out_features"] == 1 and "350/50/100" in str(data)


@pytest.mark.parametrize("fractions", [(1.0, 0.0), (-0.1, 0.2), (0.5, 0.5)])
def test_split_fractions_outside_the_unit_interval_are_config_errors(fractions):
    with pytest.raises(ConfigError, match="fraction"):
        load_dataset({"dataset": "xor", "val_fraction": fractions[0], "test_fraction": fractions[1]})


def test_too_few_samples_for_a_training_split_is_a_data_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((2, 1)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="2 samples leave none for training"):
        load_dataset({"dataset": "npz", "path": str(tmp_path / "d.npz"), "val_fraction": 0.5, "test_fraction": 0.4})


@pytest.mark.parametrize("cfg, message", [
    ({"dataset": "spiral"}, "unknown dataset 'spiral' (did you mean 'spirals'?)"),
    ({"dataset": "spirals", "n_sample": 10}, "data.n_sample: unknown key for dataset 'spirals' (did you mean "
                                             "'n_samples'?)"),
    ({"dataset": "digits", "root": "x"}, "digits takes no arguments"),
    ({"dataset": "spirals", "noise": "loud"}, "data.noise: input should be a valid number"),
    ({"dataset": "csv", "label": "y"}, "data.path: required by dataset 'csv' but missing"),
    ({"dataset": "moons", "n_samples": 1}, "data.n_samples: dataset 'moons' needs n_samples >= 2, got 1"),
])
def test_bad_config_keys_are_config_errors_naming_the_key(cfg, message):
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg)
    assert message in str(err.value)


# -- IDX files (MNIST, Fashion-MNIST) -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_set_of_gzipped_and_raw_files_loads_with_its_own_test_split(name, tmp_path):
    train_x, train_y, test_x, test_y = write_idx_set(tmp_path / name)
    arrays = DATASETS.get(name)(root=str(tmp_path / name), download=False)
    assert arrays.x.dtype == torch.float32 and arrays.task == "classification" and arrays.num_classes == 10
    assert np.allclose(arrays.x.numpy(), train_x.reshape(5, 1, 28, 28) / 255) and arrays.y.tolist() == train_y.tolist()
    assert np.allclose(arrays.test[0].numpy(), test_x.reshape(3, 1, 28, 28) / 255)
    assert arrays.test[1].tolist() == test_y.tolist()


def test_test_fraction_zero_keeps_the_t10k_files_as_test_split_and_otherwise_pools(tmp_path):
    _, _, test_x, test_y = write_idx_set(tmp_path / "mnist", n_train=20, n_test=6)
    cfg = {"dataset": "mnist", "root": str(tmp_path / "mnist"), "standardize": False, "val_fraction": 0.25}
    official = load_dataset({**cfg, "test_fraction": 0.0}, dtype=torch.float64)
    assert torch.allclose(official.x_test, torch.from_numpy(test_x.reshape(6, 1, 28, 28) / 255))
    assert official.y_test.tolist() == test_y.tolist() and (len(official.x_train), len(official.x_val)) == (15, 5)
    pooled = load_dataset({**cfg, "test_fraction": 0.5}, dtype=torch.float64)
    assert [len(pooled.x_train), len(pooled.x_val), len(pooled.x_test)] == [7, 6, 13]


def test_missing_idx_files_offline_name_the_files_and_directory(tmp_path, monkeypatch):
    def offline(url, dest, md5):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(idx, "fetch", offline)
    write_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").unlink()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_dataset({"dataset": "mnist", "root": str(tmp_path / "mnist")})
    message = str(err.value)
    assert "\n" not in message and "name resolution" in message
    assert message.endswith(f"put t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (gzipped or not) in "
                            f"{(tmp_path / 'mnist').resolve()}")
    assert "train-images" not in message


def test_download_false_never_fetches(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "fetch", lambda *a: pytest.fail("fetched with download: false"))
    with pytest.raises(DataError, match=r"could not download them \(download: false\); put train-images"):
        load_dataset({"dataset": "fashion_mnist", "root": str(tmp_path / "fm"), "download": False})


def test_downloaded_files_are_md5_checked_and_kept_only_if_they_match(tmp_path, monkeypatch):
    served = []

    def urlopen(url, timeout):
        served.append(url)
        return io.BytesIO(b"not the real file")

    monkeypatch.setattr(idx.urllib.request, "urlopen", urlopen)
    with pytest.raises(DataError, match="MD5 .*, expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_dataset({"dataset": "mnist", "root": str(tmp_path / "mnist")})
    assert served == [m + "train-images-idx3-ubyte.gz" for m in idx.MIRRORS["mnist"]]
    assert not (tmp_path / "mnist").exists()


def test_successful_download_fetches_only_the_missing_files(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    write_idx_set(source, gz=(True,) * 4)
    write_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").unlink()
    fetched = []

    def fetch(url, dest, md5):
        fetched.append(dest.name)
        dest.write_bytes((source / dest.name).read_bytes())

    monkeypatch.setattr(idx, "fetch", fetch)
    assert len(DATASETS.get("mnist")(root=str(tmp_path / "mnist")).x) == 5 and fetched == ["train-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"\x08\x03" + raw[2:], "not an IDX file: magic number 0803"),
    (lambda raw: raw[:-5], r"truncated: header says shape \(5, 28, 28\) \(3920 bytes of data\), the file holds 3915"),
    (lambda raw: raw + b"\0", "has trailing bytes"),
    (lambda raw: raw[:6], "truncated IDX header"),
    (lambda raw: gzip.compress(raw)[:-10], "corrupt or truncated gzip"),
])
def test_damaged_idx_file_is_a_data_error_naming_it(damage, message, tmp_path):
    write_idx_set(tmp_path / "mnist", gz=(False,) * 4)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message) as err:
        DATASETS.get("mnist")(root=str(tmp_path / "mnist"), download=False)
    assert str(path) in str(err.value)


def test_idx_labels_that_do_not_match_the_images_are_a_data_error(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=(False,) * 4)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(4), gz=False)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: expected 3 uint8 labels"):
        DATASETS.get("mnist")(root=str(tmp_path / "mnist"), download=False)


# -- user files: npz and csv ----------------------------------------------------------------------------


def test_npz_features_keep_their_shape_and_named_labels_are_renumbered(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.ones((4, 2, 2)), kind=np.array(["b", "a", "c", "a"]))
    arrays = DATASETS.get("npz")(path=str(tmp_path / "d.npz"), features="images", label="kind")
    assert arrays.x.shape == (4, 2, 2) and arrays.y.tolist() == [1, 0, 2, 0] and arrays.classes == ["a", "b", "c"]


def test_npz_regression_keeps_float_targets_as_columns(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((5, 3)), y=np.linspace(0, 1, 5))
    data = load_dataset({"dataset": "npz", "path": str(tmp_path / "d.npz"), "task": "regression",
                         "val_fraction": 0, "test_fraction": 0, "standardize": False}, dtype=torch.float64)
    assert data.task == "regression" and data.y_train.shape == (5, 1)
    assert sorted(data.y_train[:, 0].tolist()) == [0, 0.25, 0.5, 0.75, 1]


@pytest.mark.parametrize("arrays, kwargs, message", [
    (None, {}, "npz file .* not found"),
    ({"x": np.ones((4, 2)), "y": np.arange(4)}, {"label": "labels"}, "no array 'labels' for data.label; the file "
                                                                       "holds x, y"),
    ({"feats": np.ones((4, 2)), "y": np.arange(4)}, {"features": "feat"}, r"\(did you mean 'feats'\?\)"),
    ({"x": np.ones((4, 2)), "y": np.arange(3)}, {}, "4 samples of features but 3 labels"),
    ({"x": np.array([["a", "b"]] * 4), "y": np.arange(4)}, {}, "features must be numbers, got an array of dtype"),
    ({"x": np.array([[1.0, np.nan]] * 4), "y": np.arange(4)}, {}, "features must be finite, got nan at sample 0"),
    ({"x": np.ones((4, 2)), "y": np.array([0, 0.5, 1, 1])}, {}, "fractional values such as 0.5; use task: "
                                                                "regression"),
    ({"x": np.ones((4, 2)), "y": np.zeros(4)}, {}, "at least 2 classes"),
    ({"x": np.ones((4, 2)), "y": np.array(["a", "b", "a", "b"])}, {"task": "regression"}, "labels must be numbers"),
])
def test_npz_file_problems_are_data_errors_naming_the_file(arrays, kwargs, message, tmp_path):
    path = tmp_path / "user.npz"
    if arrays is not None:
        np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as err:
        DATASETS.get("npz")(path=str(path), **kwargs)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"PK\x03\x04 broken zip", np.ones(3).tobytes()])
def test_files_that_are_not_npz_archives_are_data_errors(content, tmp_path):
    path = tmp_path / "user.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=str(path)):
        DATASETS.get("npz")(path=str(path))


def test_a_csv_read_as_npz_is_named_for_what_it_is(tmp_path):
    path = tmp_path / "reg.csv"
    path.write_text("a,b,y\n1.0,2.0,3.5\n")
    with pytest.raises(DataError) as err:
        DATASETS.get("npz")(path=str(path))
    assert str(err.value) == (f"{path}: cannot read as .npz: it is not a numpy archive (numpy.savez writes one; a .csv "
                              "file takes dataset: csv)")


def test_npy_single_array_is_a_data_error(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    with pytest.raises(DataError, match="holds a single array"):
        DATASETS.get("npz")(path=str(tmp_path / "x.npy"))


def test_csv_features_default_to_every_column_but_the_label(tmp_path):
    path = write_csv(tmp_path / "d.csv", "w, h ,species\n1,2,setosa\n\n3,4.5,virginica\n5,6e1,setosa\n")
    arrays = DATASETS.get("csv")(path=str(path), label="species")
    assert arrays.x.tolist() == [[1, 2], [3, 4.5], [5, 60]]
    assert arrays.y.tolist() == [0, 1, 0] and arrays.classes == ["setosa", "virginica"]


def test_csv_selects_named_features_and_numeric_labels(tmp_path):
    path = write_csv(tmp_path / "d.csv", "a;b;c;y\n1;2;3;1\n4;5;6;3\n7;8;9;1\n")
    arrays = DATASETS.get("csv")(path=str(path), label="y", features=["c", "a"], delimiter=";")
    assert arrays.x.tolist() == [[3, 1], [6, 4], [9, 7]] and arrays.y.tolist() == [0, 1, 0]
    assert arrays.classes == [1, 3]
    target = DATASETS.get("csv")(path=str(path), label="c", features=["a"], task="regression", delimiter=";")
    assert target.task == "regression" and target.y.tolist() == [[3], [6], [9]]


@pytest.mark.parametrize("text, kwargs, message", [
    ("a,b,y\n1,2,0\n", {"label": "label"}, r"no column 'label' for data.label; the header has a, b, y"),
    ("a,b,y\n1,2,0\n", {"features": ["a", "bb"]}, r"no column 'bb' for data.features \(did you mean 'b'\?\)"),
    ("a,b,y\n1,2,0\n3,x,1\n", {}, "line 3, column 'b': 'x' is not a number"),
    ("a,b,y\n1,2,0\n3,inf,1\n", {}, "line 3, column 'b': 'inf' is not a finite number"),
    ("a,b,y\n1,2,0\n3,4\n", {}, "line 3 has 2 fields, the header has 3"),
    ("", {}, "the file is empty"),
    ("a,b,y\n", {}, "only a header row, no samples"),
    ("a,a,y\n1,2,0\n", {}, "names column\\(s\\) 'a' more than once"),
    ("a,b,y\n1,2,0\n", {"features": ["a", "y"]}, "'y' is both the label and one of the features"),
    ("a,b,y\n1,2,0\n3,4,cat\n", {"task": "regression"}, "line 3, column 'y': 'cat' is not a number"),
])
def test_csv_file_problems_are_data_errors_naming_file_line_and_column(text, kwargs, message, tmp_path):
    path = write_csv(tmp_path / "user.csv", text)
    with pytest.raises(DataError, match=message) as err:
        DATASETS.get("csv")(path=str(path), **{"label": "y", **kwargs})
    assert str(path) in str(err.value)


def test_missing_csv_file_is_a_data_error():
    with pytest.raises(DataError, match="csv file nowhere/user.csv not found"):
        load_dataset({"dataset": "csv", "path": "nowhere/user.csv", "label": "y"})


# -- Batches ---------------------------------------------------------------------------------------------


def make_batches(n=23, batch_size=5, **kwargs):
    x = torch.arange(n, dtype=torch.float64)[:, None].repeat(1, 2)
    return Batches(x, torch.arange(n) * 10, batch_size, seed=kwargs.pop("seed", 7), **kwargs)


def rows(batches):
    return [xb[:, 0].long().tolist() for xb, *_ in batches]


def test_an_epoch_visits_every_sample_exactly_once_with_matching_targets():
    batches = make_batches()
    seen = []
    for xb, yb in batches.epoch(0):
        assert torch.equal(yb, xb[:, 0].long() * 10)
        seen += xb[:, 0].long().tolist()
    assert len(batches) == 5 and sorted(seen) == list(range(23)) and seen != list(range(23))
    assert [len(b) for b in rows(batches.epoch(0))] == [5, 5, 5, 5, 3]


def test_drop_last_skips_the_short_batch_and_no_shuffle_keeps_order():
    assert len(make_batches(drop_last=True)) == 4
    assert rows(make_batches(shuffle=False).epoch(3))[-1] == [20, 21, 22]
    assert [len(b) for b in rows(make_batches(drop_last=True).epoch(1))] == [5, 5, 5, 5]


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    first, again = make_batches(), make_batches()
    assert rows(first.epoch(4)) == rows(again.epoch(4))
    assert rows(first.epoch(4)) != rows(first.epoch(5))
    assert rows(first.epoch(4)) != rows(make_batches(seed=8).epoch(4))
    assert [rows(e) for e in (iter(again), iter(again))] == [rows(first.epoch(0)), rows(first.epoch(1))]


@pytest.mark.parametrize("start", [0, 2, 4, 5])
def test_resuming_mid_epoch_yields_the_rest_of_that_epoch(start):
    assert rows(make_batches().epoch(3, start_batch=start)) == rows(make_batches().epoch(3))[start:]


def test_start_batch_beyond_the_epoch_is_a_data_error():
    with pytest.raises(DataError, match="cannot start epoch 0 at batch 6: an epoch has 5 batches"):
        make_batches().epoch(0, start_batch=6)


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_are_disjoint_contiguous_and_make_up_the_global_batch(world_size):
    whole = rows(make_batches(batch_size=8).epoch(2))
    shards = [rows(make_batches(batch_size=8, rank=r, world_size=world_size).epoch(2)) for r in range(world_size)]
    for b, batch in enumerate(whole):
        assert sum((shard[b] for shard in shards), []) == batch
        assert [len(s[b]) for s in shards] == [len(t) for t in torch.tensor_split(torch.tensor(batch), world_size)]
    assert make_batches(batch_size=8, rank=1, world_size=3).global_size(2) == 7


def test_shard_resume_matches_the_shards_of_the_full_epoch():
    shard = make_batches(batch_size=8, rank=1, world_size=2)
    assert rows(shard.epoch(1, start_batch=1)) == rows(shard.epoch(1))[1:]


@pytest.mark.parametrize("kwargs", [{}, {"batch_size": 8, "rank": 1, "world_size": 3}])
def test_batches_gathered_one_by_one_are_the_rows_of_the_epochs_shuffled_copy(monkeypatch, kwargs):
    from manualnet.data import batches as batches_module

    whole_epoch = [[rows(make_batches(**kwargs).epoch(e, start_batch=s))] for e in (0, 3) for s in (0, 2)]
    monkeypatch.setattr(batches_module, "GATHER_PER_BATCH_BYTES", 1)  # every batch gathered on its own
    one_by_one = [[rows(make_batches(**kwargs).epoch(e, start_batch=s))] for e in (0, 3) for s in (0, 2)]
    assert one_by_one == whole_epoch
    xb, yb = next(iter(make_batches(**kwargs).epoch(1)))
    assert xb._base is None and torch.equal(yb, xb[:, 0].long() * 10)  # its own tensors, not views
    kept = list(make_batches(**kwargs).epoch(1))                      # a user's list keeps every batch intact
    assert rows(iter(kept)) == rows(make_batches(**kwargs).epoch(1))
    # the trainer's reuse: two buffers in turn, a batch intact while the next one is made (the loop holds it)
    first, second, third = (b[0] for b in itertools.islice(make_batches(**kwargs).epoch(1, reuse=True), 3))
    assert second.data_ptr() != first.data_ptr() and third.data_ptr() == first.data_ptr()
    assert rows(make_batches(**kwargs).epoch(3, reuse=True)) == rows(make_batches(**kwargs).epoch(3))


def test_a_last_batch_smaller_than_the_world_is_a_config_error():
    with pytest.raises(ConfigError, match="leaves a last batch of 1, fewer than the 2 ranks"):
        make_batches(n=21, batch_size=5, world_size=2)


def test_labels_come_as_a_third_tensor_gathered_once_when_they_are_the_targets():
    x, y = torch.arange(6.0)[:, None], torch.arange(6)
    xb, yb, lb = next(iter(Batches(x, y, 4, seed=0, labels=y)))
    assert lb.data_ptr() == yb.data_ptr() and torch.equal(yb, xb[:, 0].long())
    with pytest.raises(DataError, match="one row per sample, got lengths"):
        Batches(x, y[:5], 2)


def test_a_data_set_too_small_for_its_val_and_test_fractions_says_so_once():
    import warnings

    from manualnet.data.dataset import split_indices

    with pytest.warns(UserWarning, match=r"^data: 3 sample\(s\) are too few for a val split \(val_fraction of 3 "
                                         r"rounds to 0\): the run reports no val/ metrics$"):
        train, val, test = split_indices(3, 0.1, 0.2, torch.Generator().manual_seed(0))
    assert (len(train), len(val), len(test)) == (2, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_indices(100, 0.1, 0.2, torch.Generator().manual_seed(0))
        split_indices(3, 0.0, 0.0, torch.Generator().manual_seed(0))  # no split asked for: nothing to say

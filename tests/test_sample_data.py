"""The committed sample data: documented shapes and dtypes, consistent labels, reproducible."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
SHAPE = (32, 256, 256)
LABEL_FILES = ("classes.tif", "instances.tif", "mask.tif")


def tiff_files(folder: Path) -> list[str]:
    """Every TIFF under ``folder``, as sorted posix paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.tif"))


def read_stack(folder: Path) -> np.ndarray:
    return np.stack([tifffile.imread(p) for p in sorted(folder.glob("slice_*.tif"))])


@pytest.fixture(scope="module")
def volumes() -> dict[str, np.ndarray]:
    found = {name: tifffile.imread(SAMPLE / name) for name in LABEL_FILES}
    found["image"] = read_stack(SAMPLE / "stack")
    return found


def test_files_are_the_documented_ones() -> None:
    expected = [f"stack/slice_{z:04d}.tif" for z in range(32)] + list(LABEL_FILES)
    assert tiff_files(SAMPLE) == sorted(expected)
    readme = (SAMPLE / "README.md").read_text()
    for name in (*LABEL_FILES, "stack/slice_0000.tif", "stack/slice_0031.tif", "(32, 256, 256)"):
        assert name in readme


def test_total_size_is_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 5_000_000


@pytest.mark.parametrize("name", ["stack/slice_0000.tif", "stack/slice_0017.tif", *LABEL_FILES])
def test_tiffs_are_compressed_with_no_voxel_size(name: str) -> None:
    with tifffile.TiffFile(SAMPLE / name) as tif:
        pages = tif.pages
        assert len(pages) == (1 if name.startswith("stack/") else SHAPE[0])
        page = pages.first
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.resolutionunit == tifffile.RESUNIT.NONE
        assert "DateTime" not in page.tags


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("image", "uint16"),
        ("classes.tif", "uint8"),
        ("instances.tif", "uint16"),
        ("mask.tif", "uint8"),
    ],
)
def test_shapes_and_dtypes(volumes: dict[str, np.ndarray], name: str, dtype: str) -> None:
    assert volumes[name].shape == SHAPE
    assert volumes[name].dtype == np.dtype(dtype)


def test_labels_have_three_classes_and_several_instances(volumes: dict[str, np.ndarray]) -> None:
    classes, instances = volumes["classes.tif"], volumes["instances.tif"]
    assert np.unique(classes).tolist() == [0, 1, 2, 3]
    ids = np.unique(instances)
    assert ids[0] == 0
    assert len(ids) - 1 == 12
    assert ids[-1] > len(ids) - 1  # some ids are skipped
    np.testing.assert_array_equal(classes > 0, instances > 0)
    per_class = {label: 0 for label in (1, 2, 3)}
    for instance_id in ids[1:]:
        labels = np.unique(classes[instances == instance_id])
        assert labels.size == 1, f"instance {instance_id} has classes {labels}"
        per_class[int(labels[0])] += 1
    assert per_class == {1: 5, 2: 4, 3: 3}


def test_mask_is_binary_and_covers_the_objects(volumes: dict[str, np.ndarray]) -> None:
    mask, instances = volumes["mask.tif"], volumes["instances.tif"]
    assert np.unique(mask).tolist() == [0, 1]
    assert mask[instances > 0].all()
    assert mask.sum() > (instances > 0).sum()
    assert mask.mean() < 0.2


def test_image_shows_the_objects(volumes: dict[str, np.ndarray]) -> None:
    image, classes = volumes["image"], volumes["classes.tif"]
    assert image.min() < image.max()
    means = [float(image[classes == label].mean()) for label in (0, 3, 2, 1)]
    assert means == sorted(means), f"background < blob < rod < sphere, got {means}"
    assert means[1] - means[0] > 400


def run_script(outdir: Path) -> None:
    script = ROOT / "scripts" / "make_sample_data.py"
    result = subprocess.run(
        [sys.executable, str(script), str(outdir)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def digests(folder: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in tiff_files(folder)
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The script run twice into fresh folders."""
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    run_script(first)
    run_script(second)
    return first, second


def test_script_is_deterministic(two_runs: tuple[Path, Path]) -> None:
    first, second = two_runs
    assert tiff_files(first) == tiff_files(SAMPLE)
    assert digests(first) == digests(second)


def test_script_reproduces_the_committed_arrays(
    two_runs: tuple[Path, Path], volumes: dict[str, np.ndarray]
) -> None:
    made = two_runs[0]
    np.testing.assert_array_equal(read_stack(made / "stack"), volumes["image"])
    for name in LABEL_FILES:
        np.testing.assert_array_equal(tifffile.imread(made / name), volumes[name])

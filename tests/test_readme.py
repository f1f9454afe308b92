"""Every example of the README runs on the shipped sample data.

The shell examples (fenced blocks without a language, and inline spans that are a whole
``datatools ...`` line) run as written through ``bash -c`` in a sandbox folder that holds the
inputs they name, made once per session from ``sample_data/``; ``datatools`` on the sandbox's
PATH is ``python -m datatools`` of this checkout. The Python blocks that import datatools run
with ``exec`` in a sandbox of their own.

A line is changed before it runs only by the rewrites in :data:`REWRITES`, each with its reason;
every line or span that does not run is listed in :data:`LEFT_OUT` with its reason, so a new
example is either run or consciously left out.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from datatools.convert import convert
from datatools.info import inspect
from datatools.patches import extract_patches

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
README = ROOT / "README.md"

REWRITES = {
    # The README sizes these for a full scan; the sample is 32 x 256 x 256 (z, y, x).
    "--z-start 100 --z-end 612": "--z-start 4 --z-end 28",
    "--roi 100:612,:,2048:": "--roi 4:28,:,128:",
    # 10000 patches of 64^3 uint16 are 5 GB; a few show the same flags.
    "--count 10000": "--count 8",
    # Absolute cluster paths live under the sandbox.
    "/data/": "data/",
    # Square brackets mark an optional part in prose; run it with the option.
    "[--class-names 1=mito,2=er]": "--class-names 1=mito,2=er",
}
"""README text -> the text that runs, applied to every example line in this order."""

LEFT_OUT = {
    "make demo": "creates .venv and installs datatools; scripts/demo.sh runs its commands",
    "make test": "runs this test suite",
    "make lint": "ruff and mypy, run by the developers' checks, not a datatools command",
    "make bench": "benchmarks: long and CPU-heavy",
    "make sample-data": "tests/test_sample_data.py reruns the generator",
    "datatools -q convert ...": "elided (...), a spelling of where -q goes",
    "datatools convert ... -q": "elided (...), a spelling of where -q goes",
    "datatools verify --against SOURCE": "SOURCE and the target are placeholders",
    "datatools patches": "names the command, not a command line",
    "sbatch --array=0-15 scripts/cluster/convert_array.sbatch /data/scan /data/scan.zarr": (
        "needs a SLURM cluster; the task-sliced convert line runs one task of such an array"
    ),
}
"""Shell lines and inline ``datatools`` spans that do not run, with the reason."""

SLURM_ARRAY_TASK_ID = "15"
"""The last task of the README's 16: with the sample's single unit it is the task that owns
it, so the task-sliced line writes the whole output."""

PYTHON_INPUTS = {
    "from datatools.loaders import": ("train.zarr",),
    "from datatools.sources import open_volume": ("sample_data",),
}
"""First line of each README Python block that imports datatools -> the inputs it reads."""


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """``(language, body)`` of every fenced code block of a Markdown text."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        yield match.group(1), match.group(2)


def shell_lines(body: str) -> Iterator[str]:
    """The command lines of a shell block: ``\\`` continuations joined, comments dropped."""
    for line in body.replace("\\\n", " ").splitlines():
        command = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
        if command:
            yield command


def inline_commands(text: str) -> Iterator[str]:
    """Inline code spans of the prose that start a ``datatools`` or ``sbatch`` line."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    for span in re.findall(r"`([^`\n]+)`", prose.replace("\n", " ")):
        if span.split()[0] in ("datatools", "sbatch") and len(span.split()) > 1:
            yield " ".join(span.split())


def readme_examples() -> list[str]:
    """Every shell line and inline command of the README, in order, without repeats."""
    text = README.read_text()
    found = [
        line
        for language, body in fenced_blocks(text)
        if language == ""
        for line in shell_lines(body)
    ]
    found.extend(inline_commands(text))
    return list(dict.fromkeys(found))


def python_blocks() -> list[str]:
    """The README's Python blocks that import datatools."""
    blocks = fenced_blocks(README.read_text())
    return [body for language, body in blocks if language == "python" and "datatools" in body]


def rewritten(line: str) -> str:
    """``line`` as it runs on the sample data (:data:`REWRITES` applied)."""
    for old, new in REWRITES.items():
        line = line.replace(old, new)
    return line


EXAMPLES = [line for line in readme_examples() if line not in LEFT_OUT]


@dataclass(frozen=True)
class Command:
    """The parts of one example that the sandbox and the checks need."""

    line: str
    """The line as it runs."""
    words: list[str]
    """Its words after ``datatools`` and the options before the command name."""

    @classmethod
    def parse(cls, line: str) -> Command:
        words = shlex.split(line.split("|")[-1])
        assert words[0] == "datatools", f"{line!r}: not a datatools line; run it or add to LEFT_OUT"
        rest = words[1:]
        while rest and rest[0].startswith("-") and rest[0] != "-":
            rest = rest[1:]
        return cls(line, rest)

    @property
    def target(self) -> str | None:
        """What the command writes: its last argument before the options, if it writes."""
        if not self.words or self.words[0] not in ("convert", "patches", "instances"):
            return None
        arguments = []
        for word in self.words[1:]:
            if word.startswith("-") and word != "-":
                break
            arguments.append(word)
        label_name = self.option("--as-labels")
        return arguments[-1] + (f"/labels/{label_name}" if label_name else "")

    def option(self, name: str) -> str | None:
        """The value given to option ``name``, or ``None``."""
        words = self.words
        return words[words.index(name) + 1] if name in words else None

    def names(self, name: str) -> bool:
        """Whether any word of the line is the input ``name`` or a path inside it."""
        words = shlex.split(self.line.replace("|", " "))
        return any(w == name or w.startswith((name + "/", name + ":")) for w in words)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with every input the examples name, made from ``sample_data/``.

    ``sample_data``, ``tiffs/``, ``stack/``, ``scan/`` and ``data/run7/`` are the sample slices;
    ``labels/`` the class labels as slices; ``volume.h5:/raw`` and ``stack.ome.tif`` the
    sample image; ``out.zarr``, ``raw.zarr`` and ``image.zarr`` its OME-Zarr image with a
    pyramid (what the CLI tour's first convert writes); ``labels.zarr`` and ``labels.tif`` the
    instance labels; ``tissue.tif`` a tissue mask (the sample's object mask is too sparse for
    ``--min-fraction 0.5`` on 64^3 patches: tissue is the three quarters of every slice at
    y < 192); ``train.zarr`` the tour's 2D patches of ``out.zarr``.
    """
    folder = tmp_path_factory.mktemp("readme_inputs")
    stack = SAMPLE / "stack"
    image = np.stack([tifffile.imread(p) for p in sorted(stack.glob("*.tif"))])
    (folder / "sample_data").symlink_to(SAMPLE)
    for name in ("tiffs", "stack", "scan", "data/run7"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).symlink_to(stack)
    (folder / "labels").mkdir()
    for z, plane in enumerate(tifffile.imread(SAMPLE / "classes.tif")):
        tifffile.imwrite(folder / "labels" / f"classes_{z:04d}.tif", plane)
    with h5py.File(folder / "volume.h5", "w") as h5:
        h5["raw"] = image
    tifffile.imwrite(folder / "stack.ome.tif", image, ome=True, metadata={"axes": "ZYX"})
    tissue = np.zeros(image.shape, np.uint8)
    tissue[:, :192] = 1
    tifffile.imwrite(folder / "tissue.tif", tissue)
    (folder / "labels.tif").symlink_to(SAMPLE / "instances.tif")
    out = folder / "out.zarr"
    convert(stack, out, levels="auto", voxel_size=(40.0, 8.0, 8.0), unit="nanometer")
    for name in ("raw.zarr", "image.zarr"):
        shutil.copytree(out, folder / name)
    convert(SAMPLE / "instances.tif", folder / "labels.zarr")
    extract_patches(out, folder / "train.zarr", size=(64, 64), stride=(32, 32), edge="symmetric")
    return folder


def sandbox_with(inputs: Path, names: list[str], folder: Path) -> Path:
    """``folder`` holding the inputs ``names``: Zarr outputs copied (a command may add to one,
    and a symlinked output is not datatools' own), everything else linked."""
    folder.mkdir()
    for name in names:
        source, place = inputs / name, folder / name
        place.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".zarr"):
            shutil.copytree(source, place)
        else:
            place.symlink_to(source.resolve())
    return folder


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``datatools`` runs ``python -m datatools`` of this checkout."""
    folder = tmp_path_factory.mktemp("readme_bin")
    script = folder / "datatools"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m datatools "$@"\n')
    script.chmod(0o755)
    return folder


def test_examples_are_found() -> None:
    """The parser sees the CLI tour, and every rewrite and omission still matches the text."""
    examples = readme_examples()
    assert "datatools info sample_data/stack --json" in examples
    assert any(line.startswith("ls /data/run7/*.tif | datatools convert -") for line in examples)
    assert any("--sampler random --count 10000 --seed 7" in line for line in examples)
    for old in REWRITES:
        assert any(old in line for line in examples), f"rewrite {old!r} matches no example"
    for line in LEFT_OUT:
        assert line in examples, f"left-out line {line!r} is no longer in the README"
    blocks = python_blocks()
    for key in PYTHON_INPUTS:
        assert sum(block.startswith(key) for block in blocks) == 1, key
    assert len(blocks) == len(PYTHON_INPUTS)


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_cli_example(example: str, inputs: Path, shim: Path, tmp_path: Path) -> None:
    """The line exits 0 in a sandbox of the inputs it names; what it writes is complete."""
    line = rewritten(example)
    command = Command.parse(line)
    target = command.target
    names = [p.name for p in sorted(inputs.iterdir()) if command.names(p.name) and p.name != target]
    sandbox = sandbox_with(inputs, names, tmp_path / "sandbox")
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SLURM_ARRAY_TASK_ID": SLURM_ARRAY_TASK_ID,
    }
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", line],
        cwd=sandbox,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    if target is not None:
        status = inspect(sandbox / target)["status"]
        assert status is not None, target
        assert status["complete"], f"{target}: {status}"


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.splitlines()[0])
def test_python_example(
    block: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block runs to its end in a sandbox of the inputs it reads."""
    names = next(n for first, n in PYTHON_INPUTS.items() if block.startswith(first))
    sandbox = sandbox_with(inputs, list(names), tmp_path / "sandbox")
    monkeypatch.chdir(sandbox)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})

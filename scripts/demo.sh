#!/usr/bin/env bash
# The main job on the shipped sample stack: inspect it, convert it to OME-Zarr, inspect the result.
# Run from anywhere (`make demo` runs it); idempotent: --overwrite replaces our own earlier output.
set -euo pipefail
cd "$(dirname "$0")/.."

datatools=.venv/bin/datatools
stack=sample_data/stack
target=demo_out/stack.zarr

heading() {
    printf '\n== %s ==\n' "$1"
}

heading "datatools demo: 32 x 256 x 256 uint16 TIFF slices -> OME-Zarr"

heading "datatools info $stack"
"$datatools" info "$stack"

heading "datatools convert $stack $target (with a pyramid)"
mkdir -p demo_out
"$datatools" convert "$stack" "$target" --voxel-size 40,8,8 --unit nanometer --levels auto \
    --overwrite

heading "datatools convert sample_data/classes.tif $target --as-labels classes"
"$datatools" convert sample_data/classes.tif "$target" --as-labels classes --overwrite

heading "datatools info $target"
"$datatools" info "$target"

heading "datatools verify $target --against $stack"
"$datatools" verify "$target" --against "$stack"

heading "datatools patches $target demo_out/patches.zarr (2D 64x64 with their labels)"
"$datatools" patches "$target" demo_out/patches.zarr --size 64,64 --stride 64 \
    --labels sample_data/classes.tif --overwrite
"$datatools" info demo_out/patches.zarr

heading "datatools instances $stack sample_data/instances.tif demo_out/cells.zarr"
"$datatools" instances "$stack" sample_data/instances.tif demo_out/cells.zarr --size 16,48,48 \
    --masks --overwrite
"$datatools" info demo_out/cells.zarr

heading "done"
echo "Result: $(pwd)/$target (OME-Zarr image; level 0 is the full-resolution array,"
echo "        labels/classes its label image), demo_out/patches.zarr, demo_out/cells.zarr"
echo "Open it in Python (.venv/bin/python):"
echo "    import zarr; a = zarr.open(\"$target/0\", mode=\"r\"); print(a.shape, a.dtype)"

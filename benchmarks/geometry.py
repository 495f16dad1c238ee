"""The same brain on two grids, preprocessed: voxel-index stretching (fedsim before 2026-12-01) vs
world-space resampling onto the MNI-box grid (:mod:`fedsim.data.geometry`).

``python benchmarks/geometry.py [--shape 36 43 36]`` writes ``docs/geometry-two-grids.png`` and
the correlation of the two preprocessed volumes for each method to ``benchmarks/results/geometry.md``. Grid A is nilearn's MNI152
T1 (1 mm, 197x233x189); grid B is the same anatomy resampled by nilearn onto a scanner-like 2 mm
grid with a 256 mm field of view (128^3, centred on the origin).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from nilearn import datasets
from nilearn.image import resample_img
from scipy import ndimage as ndi

from results_table import append_row, machine

from fedsim.data.volumes import load_volume, zscore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "geometry.md"


def stretched(img: nib.Nifti1Image, shape: tuple[int, int, int]) -> np.ndarray:
    """What fedsim did before: the file's array stretched onto ``shape``, whatever it spans in mm."""
    data = np.asarray(nib.as_closest_canonical(img).dataobj, dtype=np.float32)
    return zscore(ndi.zoom(data, np.asarray(shape) / np.asarray(data.shape), order=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[36, 43, 36])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "geometry-two-grids.png")
    shape = tuple(p.parse_args().shape)
    out = p.parse_args().out
    grid_a = datasets.load_mni152_template(resolution=1)
    scanner = np.diag([2.0, 2.0, 2.0, 1.0])
    scanner[:3, 3] = -128.0
    grid_b = resample_img(grid_a, target_affine=scanner, target_shape=(128, 128, 128), interpolation="linear",
                          force_resample=True, copy_header=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "a.nii.gz", Path(tmp) / "b.nii.gz"]
        for img, path in zip((grid_a, grid_b), paths):
            nib.save(img, path)
        methods = {"voxel-index stretching (before)": [stretched(img, shape) for img in (grid_a, grid_b)],
                   "world-space onto the MNI box (now)": [load_volume(path, shape) for path in paths]}
    fig = Figure(figsize=(9, 6.2))
    axes = fig.subplots(2, 3)
    correlations = []
    for row, (name, (a, b)) in zip(axes, methods.items()):
        corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        correlations.append(f"{corr:.3f}")
        print(f"{name}: correlation {corr:.3f} at {'x'.join(map(str, shape))}")
        z = shape[2] // 2
        for ax, view, title in zip(row, (a[:, :, z], b[:, :, z], a[:, :, z] - b[:, :, z]),
                                   ("grid A: MNI152 1 mm", "grid B: 2 mm, 256 mm FOV", "A − B")):
            ax.imshow(view.T, origin="lower", cmap="gray" if "−" not in title else "RdBu", vmin=-3, vmax=3)
            ax.set_axis_off()
            ax.set_title(title, fontsize=9)
        row[0].text(-0.08, 0.5, f"{name}\nr = {corr:.2f}", transform=row[0].transAxes, rotation=90,
                    ha="right", va="center", fontsize=9)
    fig.suptitle(f"The same brain on two grids after fedsim's preprocessing (axial slice {z} of {shape[2]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"figure: {out}")
    append_row(RESULTS, "The same brain on two grids after preprocessing (`python benchmarks/geometry.py`)",
               ["machine", "grid", "voxel-index stretching (before)", "world space onto the MNI box (now)"],
               [machine(), "x".join(map(str, shape)), *correlations])


if __name__ == "__main__":
    main()

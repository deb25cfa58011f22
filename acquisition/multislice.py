"""First-principles truth: a cached library of multislice HAADF and ABF images (abTEM + ASE).

The fast renderer (:mod:`.specimens`, :mod:`.optics`) draws columns as Gaussians convolved with
the probe, with ``Z ** 1.7`` brightness. Real images come from electrons channelling along the
columns, thermal diffuse scattering and, in bright field, interference. This module computes the
real thing once for a few crystals and zone axes with abTEM (frozen phonons, several thicknesses,
a HAADF and an ABF detector at once), and keeps one projected unit cell per crystal, thickness and
detector. A cell is periodic, so :func:`cell_field` tiles it into a field of any size, sampling
and orientation (point sampling, as a scan does), and training mixes such fields with the fast
renderer's (``FieldPool(..., targets=library_targets(...))``).

Building needs the optional extra ``pip install stemreg[multislice]`` (abtem, ase) and tens of
CPU minutes per crystal; ``stemreg multislice --out DIR`` runs it (in the background:
``nice -n 19``), one ``<crystal>.npz`` per crystal plus ``library.json``. Reading a library needs
numpy only. The library is a cache: never committed (tests use a tiny one in tests/fixtures).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.ndimage import map_coordinates

#: The microscope of the library: 200 kV, 30 mrad (the conditions' optics).
ENERGY_KEV = 200.0
CONVERGENCE_MRAD = 30.0
#: Detector angles (mrad): HAADF 65 to 160 (the potential's sampling limits the outer angle),
#: ABF from half the convergence angle to the convergence angle (Findlay et al. 2010).
HAADF_MRAD = (65.0, 160.0)
ABF_MRAD = (15.0, 30.0)
#: Thermal vibration (rms displacement, Angstrom) of the frozen phonons.
PHONON_SIGMA_A = 0.08


@dataclass(frozen=True)
class Crystal:
    """A crystal along a zone axis: the specimen family it stands for and the thicknesses kept."""

    name: str
    family: str
    thickness_nm: tuple[float, ...]


#: Cheapest first (the cost grows with the thickness), so a build stopped early still holds a mix.
CRYSTALS = (
    Crystal("MoS2-001", "dichalcogenide", (0.6,)),
    Crystal("SrTiO3-001", "perovskite", (3.0, 6.0)),
    Crystal("Au-110", "fcc-metal", (2.0, 5.0)),
    Crystal("Si-110", "dumbbell", (3.0, 6.0)),
)


def _atoms(name: str):
    """The orthogonal unit cell of a crystal, viewed along z."""
    from ase.build import bulk, mx2, surface
    from ase.spacegroup import crystal

    if name == "SrTiO3-001":
        return crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221,
                       cellpar=[3.905, 3.905, 3.905, 90, 90, 90])
    if name == "Si-110":
        import abtem

        return abtem.orthogonalize_cell(surface(bulk("Si", "diamond", a=5.431, cubic=True), (1, 1, 0), layers=2,
                                                periodic=True))
    if name == "Au-110":
        import abtem

        return abtem.orthogonalize_cell(surface(bulk("Au", "fcc", a=4.078, cubic=True), (1, 1, 0), layers=2,
                                                periodic=True))
    if name == "MoS2-001":
        import abtem

        atoms = abtem.orthogonalize_cell(mx2("MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=2.0))
        return atoms
    raise ValueError(f"unknown crystal {name!r}; known: {', '.join(c.name for c in CRYSTALS)}")


def simulate_crystal(crystal: Crystal, *, phonons: int = 4, scan_sampling_pm: float = 20.0,
                     potential_sampling_pm: float = 6.0, min_lateral_nm: float = 1.6, seed: int = 1) -> dict:
    """HAADF and ABF images of one projected unit cell at each of the crystal's thicknesses (abTEM).

    Returns a dict of arrays: ``haadf`` and ``abf`` ``(T, ny, nx)`` (detected fraction of the
    beam), ``cell_pm`` ``(2,)`` (height, width of the cell), ``thickness_nm`` ``(T,)``.
    """
    import abtem

    abtem.config.set({"dask.scheduler": "synchronous", "device": "cpu"})
    cell = _atoms(crystal.name)
    lateral = np.array(cell.cell.lengths()[:2])
    repeat_xy = np.maximum(1, np.ceil(min_lateral_nm * 10 / lateral)).astype(int)
    depth = cell.cell.lengths()[2]
    repeat_z = max(1, int(np.ceil(max(crystal.thickness_nm) * 10 / depth)))
    atoms = cell * (int(repeat_xy[0]), int(repeat_xy[1]), repeat_z)
    slice_a = depth / max(1, round(depth / 2.0))  # ~2 A slices that divide the cell
    per_cell = int(round(depth / slice_a))
    exits = tuple(sorted({min(repeat_z, max(1, int(round(t * 10 / depth)))) * per_cell - 1
                          for t in crystal.thickness_nm}))
    phonon_atoms = abtem.FrozenPhonons(atoms, num_configs=phonons, sigmas=PHONON_SIGMA_A, seed=seed)
    potential = abtem.Potential(phonon_atoms, sampling=potential_sampling_pm / 100, slice_thickness=slice_a,
                                projection="infinite", parametrization="lobato", exit_planes=exits)
    probe = abtem.Probe(energy=ENERGY_KEV * 1e3, semiangle_cutoff=CONVERGENCE_MRAD)
    probe.grid.match(potential)
    scan = abtem.GridScan(start=(0, 0), end=tuple(lateral), sampling=scan_sampling_pm / 100, endpoint=False,
                          potential=potential)
    # the potential's sampling limits the angles simulated (2/3 of Nyquist, abTEM's antialiasing)
    wavelength_pm = 2.5079 if ENERGY_KEV == 200.0 else float(abtem.core.energy.energy2wavelength(ENERGY_KEV * 1e3)) * 100
    outer = min(HAADF_MRAD[1], 0.98 * 1e3 * (2 / 3) * wavelength_pm / (2 * potential_sampling_pm))
    detectors = [abtem.AnnularDetector(inner=HAADF_MRAD[0], outer=outer),
                 abtem.AnnularDetector(inner=ABF_MRAD[0], outer=ABF_MRAD[1])]
    haadf, abf = probe.scan(potential, scan=scan, detectors=detectors).compute(progress_bar=False)
    shape = (-1,) + haadf.array.shape[-2:]
    # abTEM's scan axes are (x, y); images here are (row = y, col = x)
    to_rc = lambda a: np.swapaxes(np.asarray(a, np.float64).reshape(shape), -1, -2)  # noqa: E731
    thickness = (np.array(exits) + 1) * slice_a / 10
    return {"haadf": to_rc(haadf.array).astype(np.float32), "abf": to_rc(abf.array).astype(np.float32),
            "cell_pm": np.array([lateral[1], lateral[0]]) * 100, "thickness_nm": thickness,
            "family": crystal.family, "name": crystal.name}


def build_library(out_dir: str | Path, crystals: tuple[Crystal, ...] = CRYSTALS, *,
                  on_done: Callable[[str, float], None] | None = None, **options) -> Path:
    """Simulate every crystal not yet in ``out_dir`` (a cache: finished crystals are kept) and
    write ``<name>.npz`` each and ``library.json``; returns ``out_dir``."""
    import time

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for crystal in crystals:
        path = out / f"{crystal.name}.npz"
        if path.is_file():
            continue
        started = time.perf_counter()
        result = simulate_crystal(crystal, **options)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **result)
        tmp.replace(path)
        if on_done is not None:
            on_done(crystal.name, time.perf_counter() - started)
    meta = {"energy_keV": ENERGY_KEV, "convergence_mrad": CONVERGENCE_MRAD, "haadf_mrad": HAADF_MRAD,
            "abf_mrad": ABF_MRAD, "phonon_sigma_A": PHONON_SIGMA_A, "options": options,
            "crystals": [c.name for c in crystals if (out / f"{c.name}.npz").is_file()]}
    (out / "library.json").write_text(json.dumps(meta, indent=1))
    return out


@dataclass(frozen=True)
class LibraryCell:
    """One projected unit cell of the library: its images at each thickness."""

    name: str
    family: str
    haadf: np.ndarray        # (T, ny, nx)
    abf: np.ndarray          # (T, ny, nx)
    cell_pm: np.ndarray      # (2,) height, width
    thickness_nm: np.ndarray  # (T,)


def load_library(directory: str | Path) -> list[LibraryCell]:
    """Every ``*.npz`` cell in ``directory`` (a built library or the tests' tiny one)."""
    folder = Path(directory)
    paths = sorted(p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz")) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"{folder}: no multislice library here (build one with `stemreg multislice --out "
                                f"{folder}`)")
    cells = []
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            cells.append(LibraryCell(str(data["name"]), str(data["family"]), data["haadf"], data["abf"],
                                     data["cell_pm"].astype(np.float64), data["thickness_nm"].astype(np.float64)))
    return cells


def _upsampled(image: np.ndarray, factor: int) -> np.ndarray:
    """Band-limited (Fourier) interpolation of a periodic cell image by an integer factor."""
    ny, nx = image.shape
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    big = np.zeros((ny * factor, nx * factor), dtype=complex)
    # the zero frequency sits at n // 2 after fftshift and must land at (n * factor) // 2 of the big
    # spectrum; (n * factor - n) // 2 is one off for odd n and modulated the cell (Au [110]: 21 x 29)
    y0, x0 = (ny * factor) // 2 - ny // 2, (nx * factor) // 2 - nx // 2
    big[y0:y0 + ny, x0:x0 + nx] = spectrum
    return np.real(np.fft.ifft2(np.fft.ifftshift(big))) * factor * factor


def cell_field(cell: LibraryCell, *, contrast: str, thickness_index: int, size_px: int, pixel_size_pm: float,
               rng: np.random.Generator) -> np.ndarray:
    """A field of ``size_px`` at ``pixel_size_pm``: the cell tiled at a random origin and in-plane
    rotation, point-sampled (float64, the detector's units)."""
    images = {"haadf": cell.haadf, "abf": cell.abf}[contrast]
    image = _upsampled(np.asarray(images[thickness_index], np.float64), 4)
    step_pm = cell.cell_pm / np.array(image.shape)  # pm per upsampled pixel (rows, cols)
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[:size_px, :size_px] * pixel_size_pm
    y = rows * np.cos(angle) - cols * np.sin(angle) + rng.uniform(0, cell.cell_pm[0])
    x = rows * np.sin(angle) + cols * np.cos(angle) + rng.uniform(0, cell.cell_pm[1])
    return map_coordinates(image, [y / step_pm[0], x / step_pm[1]], order=3, mode="grid-wrap")


def library_targets(cells: list[LibraryCell], n: int, *, size_px: int, pixel_size_range_pm: tuple[float, float],
                    seed: int, bright_field_fraction: float = 0.3) -> list[tuple[np.ndarray, float, str]]:
    """``n`` clean fields from the library as training targets ``(image, pixel_size_pm, name)`` for
    :class:`~stemreg.acquisition.stream.FieldPool` (samplings log-uniform over the range)."""
    rng = np.random.default_rng(seed)
    targets = []
    for k in range(n):
        cell = cells[int(rng.integers(len(cells)))]
        contrast = "abf" if rng.random() < bright_field_fraction else "haadf"
        t = int(rng.integers(len(cell.thickness_nm)))
        size_pm = float(np.exp(rng.uniform(*np.log(pixel_size_range_pm))))
        field = cell_field(cell, contrast=contrast, thickness_index=t, size_px=size_px, pixel_size_pm=size_pm, rng=rng)
        targets.append((field, size_pm, f"multislice:{cell.name}:{contrast}:{cell.thickness_nm[t]:.1f}nm"))
    return targets

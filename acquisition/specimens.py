"""Synthetic specimens: crystals of atomic columns seen down a zone axis, with defects.

HAADF contrast is close to incoherent Z-contrast: a column's brightness is the
sum over its atoms of ``Z ** 1.7``. Every field comes with the positions of its
columns (for atom-column metrics later).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

Z_EXPONENT = 1.7
# Column width before the probe blurs it: the thermal vibration amplitude (u_rms ~ 8 pm at room temperature).
COLUMN_SIGMA_PM = 8.0
# Correlation length of the amorphous background (contamination, support film, surface damage): the speckle
# of an amorphous layer seen in HAADF is a few interatomic distances across, 2 to 3 Angstrom.
BACKGROUND_CORRELATION_PM = 250.0
BACKGROUND_MEAN, BACKGROUND_STD = 0.5, 0.2
# Diffuse signal inside a nanoparticle, relative to a column's peak in the projected potential (before the
# probe spreads the columns, which lowers their peaks about tenfold, so that it shows as ~half their height).
PARTICLE_PEDESTAL = 0.05


class SpecimenFamily(str, enum.Enum):
    """The structure families a condition can draw from."""

    perovskite = "perovskite"          # SrTiO3 along [001]: Sr, Ti-O and (faint) O columns
    dichalcogenide = "dichalcogenide"  # single-layer MoS2 along [001]: Mo and S2 columns alternate
    dumbbell = "dumbbell"              # zinc-blende GaAs along [110]: Ga-As dumbbells 141 pm apart
    fcc_metal = "fcc-metal"            # Au along [110]: a centred rectangle of Au columns
    nanoparticle = "nanoparticle"      # an Au [110] particle edge on amorphous carbon (non-periodic)
    random_lattice = "random-lattice"  # a random 2-D lattice (square to oblique, 1 to 3 columns per cell)
    # An fcc metal along [110] shows single columns; the dumbbells of the [110] projection belong to the
    # fcc lattices with a two-atom basis (diamond, zinc blende), hence the GaAs family beside Au.


@dataclass(frozen=True)
class Site:
    """One column of a unit cell: fractional coordinates along (a1, a2), its atoms' Z, and substitutes."""

    frac: tuple[float, float]
    atomic_numbers: tuple[int, ...]
    substitute: tuple[int, ...] | None = None  # the column's atoms after a substitution


@dataclass(frozen=True)
class Lattice:
    """A projected unit cell: basis vectors in pm and its columns."""

    a1_pm: tuple[float, float]
    a2_pm: tuple[float, float]
    sites: tuple[Site, ...]

    @property
    def spacing_pm(self) -> float:
        """The shortest lattice vector: the column spacing that a sampling is quoted against."""
        return float(min(np.hypot(*self.a1_pm), np.hypot(*self.a2_pm)))


_A_STO, _A_MOS2, _A_GAAS, _A_AU = 390.5, 316.0, 565.3, 407.8
LATTICES: dict[SpecimenFamily, Lattice] = {
    SpecimenFamily.perovskite: Lattice(
        (_A_STO, 0.0), (0.0, _A_STO),
        (Site((0.0, 0.0), (38,), (57,)),          # Sr, La-doped
         Site((0.5, 0.5), (22, 8), (41, 8)),      # Ti-O, Nb substitution
         Site((0.5, 0.0), (8,)), Site((0.0, 0.5), (8,)))),
    SpecimenFamily.dichalcogenide: Lattice(
        (_A_MOS2, 0.0), (_A_MOS2 / 2, _A_MOS2 * np.sqrt(3) / 2),
        (Site((0.0, 0.0), (42,), (74,)),          # Mo, W substitution
         Site((1 / 3, 1 / 3), (16, 16), (16,)))),  # S2 (two S atoms above each other), S monovacancy
    SpecimenFamily.dumbbell: Lattice(
        (_A_GAAS / np.sqrt(2), 0.0), (0.0, _A_GAAS),
        (Site((0.0, 0.0), (31,), (49,)), Site((0.0, 0.25), (33,)),
         Site((0.5, 0.5), (31,), (49,)), Site((0.5, 0.75), (33,)))),
    SpecimenFamily.fcc_metal: Lattice(
        (_A_AU / np.sqrt(2), 0.0), (0.0, _A_AU),
        (Site((0.0, 0.0), (79,), (78,)), Site((0.5, 0.5), (79,), (78,)))),
}
LATTICES[SpecimenFamily.nanoparticle] = LATTICES[SpecimenFamily.fcc_metal]
# Lattice constants the random lattice draws from (pm): most crystals seen in HAADF lie in this span.
RANDOM_LATTICE_A_PM = (250.0, 600.0)
#: A nominal spacing for the random family, for choosing a sampling before the lattice is drawn.
RANDOM_LATTICE_SPACING_PM = 400.0
# Columns a random cell may add to its corner column, in fractional coordinates, by lattice shape; each set
# keeps every pair of columns at least a third of a lattice constant apart.
_RECT_SITES = ((0.5, 0.5), (0.5, 0.0), (0.0, 0.5))
_HEX_SITES = ((1 / 3, 1 / 3), (2 / 3, 2 / 3))
# Atomic numbers a random column may hold (O to Bi): light, medium and heavy columns side by side.
_RANDOM_Z = (8, 14, 22, 26, 31, 38, 42, 50, 57, 74, 79, 83)


def family_spacing_pm(family: "SpecimenFamily | str") -> float:
    """The column spacing of a family's lattice (nominal for the random lattice), pm."""
    family = SpecimenFamily(family)
    return RANDOM_LATTICE_SPACING_PM if family is SpecimenFamily.random_lattice else LATTICES[family].spacing_pm


def random_lattice(rng: np.random.Generator) -> Lattice:
    """A random projected lattice: square, rectangular, hexagonal or oblique, 1 to 3 columns per cell.

    Stands in for the crystals no built-in family covers, so that a network learns lattices in general
    rather than five of them.
    """
    a = float(rng.uniform(*RANDOM_LATTICE_A_PM))
    shape = int(rng.integers(4))  # 0 square, 1 rectangular, 2 hexagonal, 3 oblique
    ratio = 1.0 if shape in (0, 2) else float(rng.uniform(1.1, 1.6))
    gamma = np.pi / 2 if shape in (0, 1) else np.pi / 3 if shape == 2 else float(rng.uniform(np.pi / 3, np.pi / 2))
    candidates = _RECT_SITES if shape in (0, 1) else _HEX_SITES
    n_extra = int(rng.integers(0, len(candidates) + 1))
    fracs = [(0.0, 0.0)] + [candidates[i] for i in rng.permutation(len(candidates))[:n_extra]]

    def atoms() -> tuple[int, ...]:
        return tuple(int(z) for z in rng.choice(_RANDOM_Z, size=int(rng.integers(1, 4))))

    sites = tuple(Site(f, atoms(), atoms()) for f in fracs)
    return Lattice((a, 0.0), (ratio * a * np.cos(gamma), ratio * a * np.sin(gamma)), sites)


@dataclass
class Specimen:
    """Columns of one field: positions (row, col) in pm from the field's corner, and brightness."""

    positions_pm: np.ndarray  # (K, 2)
    brightness: np.ndarray    # (K,) sum of Z ** 1.7 over the column's atoms
    family: SpecimenFamily
    background: float = 0.0   # amplitude of an amorphous background (0: none)
    # A particle's outline, (centre row, centre col, radius) in pm: inside it the crystal's thickness adds a
    # diffuse signal between the columns (thermal diffuse scattering, probe channelling), so the particle
    # stands out from its support as it does in real HAADF images.
    particle_pm: tuple[float, float, float] | None = None


def column_brightness(atomic_numbers: tuple[int, ...]) -> float:
    """Incoherent Z-contrast of one column: ``sum(Z ** 1.7)``."""
    return float(sum(z**Z_EXPONENT for z in atomic_numbers))


def draw_specimen(family: SpecimenFamily | str, field_pm: tuple[float, float], rng: np.random.Generator, *,
                  vacancy_fraction: float = 0.0, substitution_fraction: float = 0.0,
                  background_fraction: float = 0.0, lattice_strain: float = 0.02,
                  brightness_spread: float = 0.0) -> Specimen:
    """Draw a field: random orientation, origin and lattice constant (+- ``lattice_strain``), and defects.

    Parameters
    ----------
    family
        One of :class:`SpecimenFamily`.
    field_pm
        Field size (height, width) in pm; columns are generated a little beyond it.
    vacancy_fraction, substitution_fraction
        Probability that a column is missing, or has its substitute atoms.
    background_fraction
        Height of the smooth amorphous background (surface contamination, support, thickness changes)
        relative to the imaged columns' peaks.
    brightness_spread
        Each sublattice's brightness is multiplied by ``exp(N(0, brightness_spread))`` (thickness,
        channelling and composition change the Z-contrast ratios between sublattices).
    """
    family = SpecimenFamily(family)
    lattice = random_lattice(rng) if family is SpecimenFamily.random_lattice else LATTICES[family]
    scale = 1 + rng.uniform(-lattice_strain, lattice_strain)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    basis = rot @ (np.array([lattice.a1_pm, lattice.a2_pm]).T * scale)  # columns: a1, a2 as (row, col)
    height, width = field_pm
    centre = np.array([height, width]) / 2 + rng.uniform(-0.5, 0.5, 2) * np.linalg.norm(basis, axis=0).max()
    reach = np.hypot(height, width) / 2 + 2 * np.linalg.norm(basis, axis=0).max()
    n_cells = int(np.ceil(reach / min(np.abs(np.linalg.det(basis)) / np.linalg.norm(basis, axis=0)))) + 1
    i, j = np.meshgrid(np.arange(-n_cells, n_cells + 1), np.arange(-n_cells, n_cells + 1), indexing="ij")
    cells = np.stack([i.ravel(), j.ravel()], axis=1).astype(float)

    positions, brightness = [], []
    for site in lattice.sites:
        frac = cells + np.asarray(site.frac)
        pos = frac @ basis.T + centre
        factor = float(np.exp(rng.normal(0.0, brightness_spread))) if brightness_spread > 0 else 1.0
        bright = np.full(len(pos), factor * column_brightness(site.atomic_numbers))
        if site.substitute is not None and substitution_fraction > 0:
            swapped = rng.random(len(pos)) < substitution_fraction
            bright[swapped] = factor * column_brightness(site.substitute)
        positions.append(pos)
        brightness.append(bright)
    positions = np.concatenate(positions)
    brightness = np.concatenate(brightness)
    margin = 60.0
    inside = ((positions[:, 0] > -margin) & (positions[:, 0] < height + margin)
              & (positions[:, 1] > -margin) & (positions[:, 1] < width + margin))
    if vacancy_fraction > 0:
        inside &= rng.random(len(positions)) >= vacancy_fraction
    positions, brightness = positions[inside], brightness[inside]

    background = background_fraction
    if family is SpecimenFamily.nanoparticle:
        # A faceted particle edge: keep the columns on one side of a random line through the field,
        # rounded by a circle, so that the edge and the amorphous support both show.
        normal_angle = rng.uniform(0, 2 * np.pi)
        normal = np.array([np.cos(normal_angle), np.sin(normal_angle)])
        offset = rng.uniform(-0.25, 0.25) * min(height, width)
        radius = rng.uniform(0.6, 1.2) * max(height, width)
        centre_particle = np.array([height, width]) / 2 + normal * (offset + radius)
        in_particle = np.linalg.norm(positions - centre_particle, axis=1) < radius
        positions, brightness = positions[in_particle], brightness[in_particle]
        background = max(background, float(rng.uniform(0.2, 0.4)))
        return Specimen(positions, brightness, family, background,
                        (float(centre_particle[0]), float(centre_particle[1]), float(radius)))
    return Specimen(positions, brightness, family, background)


def background_spectrum(shape_px: tuple[int, int], correlation_px: float, rng: np.random.Generator) -> np.ndarray:
    """Half spectrum (``rfft2`` layout) of a smooth Gaussian random field with mean 0.5 and std 0.2.

    Drawn directly in Fourier space (white complex noise times a Gaussian of ``correlation_px``), so
    adding it to a specimen's spectrum costs no extra FFT. Values fall outside [0, 1] with about
    1 % probability.
    """
    from stemreg.acquisition.optics import gaussian_transfer

    envelope = gaussian_transfer(shape_px, correlation_px)
    noise = rng.standard_normal(envelope.shape) + 1j * rng.standard_normal(envelope.shape)
    weights = np.full(envelope.shape[1], 2.0)  # each inner half-spectrum column stands for two
    weights[0] = 1.0
    if shape_px[1] % 2 == 0:
        weights[-1] = 1.0
    n_pixels = shape_px[0] * shape_px[1]
    std = np.sqrt((2 * envelope**2 * weights).sum()) / n_pixels
    spectrum = noise * envelope * (BACKGROUND_STD / max(std, 1e-12))
    spectrum[0, 0] = BACKGROUND_MEAN * n_pixels
    return spectrum


def render_columns(specimen: Specimen, shape_px: tuple[int, int], pixel_size_pm: float, *,
                   origin_px: tuple[float, float] = (0.0, 0.0),
                   column_sigma_pm: float = COLUMN_SIGMA_PM) -> np.ndarray:
    """Projected potential of the columns on a pixel grid (float64), Gaussians of ``column_sigma_pm``.

    ``origin_px`` is where the specimen's (0, 0) lies on the grid (a margin around the field).
    Columns are drawn in a small window each, all at once (no Python loop over columns).
    The amorphous background is added in Fourier space (:func:`background_spectrum`).
    """
    height, width = shape_px
    image = np.zeros(shape_px, dtype=np.float64)
    sigma_px = column_sigma_pm / pixel_size_pm
    if len(specimen.positions_pm):
        centres = specimen.positions_pm / pixel_size_pm + np.asarray(origin_px)
        radius = int(np.ceil(4 * sigma_px))
        offsets = np.arange(-radius, radius + 1)
        base = np.floor(centres).astype(int)
        rows = base[:, 0, None, None] + offsets[None, :, None]
        cols = base[:, 1, None, None] + offsets[None, None, :]
        d2 = (rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2
        values = specimen.brightness[:, None, None] * np.exp(-d2 / (2 * sigma_px**2)) / (2 * np.pi * sigma_px**2)
        rows, cols = np.broadcast_arrays(rows, cols)
        keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        image += np.bincount((rows[keep] * width + cols[keep]), weights=values[keep],
                             minlength=height * width).reshape(shape_px)
    if specimen.particle_pm is not None and len(specimen.brightness):
        # the particle's diffuse pedestal: PARTICLE_PEDESTAL of a typical column's peak, edge smoothed over
        # a column width
        from scipy.special import erf

        row_c, col_c, radius = np.asarray(specimen.particle_pm) / pixel_size_pm
        yy, xx = np.indices(shape_px, dtype=np.float64)
        inside = radius - np.hypot(yy - origin_px[0] - row_c, xx - origin_px[1] - col_c)
        peak = np.median(specimen.brightness) / (2 * np.pi * sigma_px**2)
        image += PARTICLE_PEDESTAL * peak * 0.5 * (1 + erf(inside / (np.sqrt(2) * 3 * sigma_px)))
    return image

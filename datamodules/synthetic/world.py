"""A small seeded "world" of objects on scenes, shared by every synthetic dataset twin.

The twins (NUS-WIDE now; SUN397, CrisisMMD, MS-COCO, ImageNet-Captions later) are written in the
real on-disk layout of each release so that the real readers are what the tests exercise. This
module holds the dataset-independent primitives they share:

* **Scenes**: a picture is a background made of *scene elements* (a top band of sky, possibly at
  sunset, with clouds; up to two ground textures such as water or grass; a global night
  darkening) with *glyphs* drawn over it.
* **Glyphs**: an object is a ``shape x colour`` pair drawn with a contrasting outline, at a random
  size, position and small rotation, so objects may overlap (occlusion).
* **Concept registry**: gives each concept of a dataset a distinct visual signature (a glyph, or a
  scene element) so that labels are learnable from pixels by a small CNN at 64 px.
* **Noisy text**: Zipf weights, a filler-word pool and a vocabulary builder for user tags.

Everything is a pure function of an explicit ``numpy.random.Generator``: the same seed gives the
same pixels and words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Shape mask on glyph coordinates ``(u, v)`` in [-1, 1] (``v`` grows downwards)."""

# --------------------------------------------------------------------------------------------
# Glyphs
# --------------------------------------------------------------------------------------------


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) <= 1.0


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v <= 0.8) & (np.abs(u) * 1.6 <= v + 0.8)


def _plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    arms = (np.abs(u) <= 0.3) | (np.abs(v) <= 0.3)
    return arms & (np.maximum(np.abs(u), np.abs(v)) <= 0.95)


def _saltire(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _plus((u - v) * 0.7071, (u + v) * 0.7071)


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.3)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    radius = np.hypot(u, v)
    theta = np.arctan2(v, u) + np.pi / 2
    return radius <= 0.38 + 0.62 * np.abs(np.cos(2.5 * theta)) ** 3


def _hbar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(v) <= 0.35) & (np.abs(u) <= 1.0)


def _vbar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _hbar(v, u)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _circle(u, v) & ((u - 0.45) ** 2 + v * v > 0.65)


def _hexagon(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(v) <= 0.866) & (np.abs(u) * 0.866 + np.abs(v) * 0.5 <= 0.866)


def _tee(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    bar = (v >= -0.95) & (v <= -0.4) & (np.abs(u) <= 0.95)
    stem = (np.abs(u) <= 0.28) & (np.abs(v) <= 0.95)
    return bar | stem


def _chevron(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(v - (0.9 * np.abs(u) - 0.45)) <= 0.3) & (np.abs(u) <= 0.95)


SHAPES: dict[str, MaskFn] = {
    "circle": _circle,
    "square": _square,
    "diamond": _diamond,
    "triangle": _triangle,
    "plus": _plus,
    "saltire": _saltire,
    "ring": _ring,
    "star": _star,
    "hbar": _hbar,
    "vbar": _vbar,
    "crescent": _crescent,
    "hexagon": _hexagon,
    "tee": _tee,
    "chevron": _chevron,
}
"""Glyph shapes, each a mask function of glyph coordinates."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green": (30, 170, 60),
    "cyan": (0, 200, 220),
    "blue": (30, 60, 220),
    "purple": (130, 50, 190),
    "magenta": (230, 40, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (140, 80, 30),
    "pink": (255, 160, 190),
}
"""Glyph fill colours (RGB)."""

_DARK_COLOURS = frozenset({"black", "brown", "blue", "purple"})
_OUTLINE_SCALE = 1.25


@dataclass(frozen=True)
class Glyph:
    """An object's visual signature: a shape from :data:`SHAPES` filled with a :data:`COLOURS` colour."""

    shape: str
    colour: str

    def outline_rgb(self) -> tuple[int, int, int]:
        """Outline colour contrasting with the fill (light around dark colours, dark otherwise)."""
        return (235, 235, 235) if self.colour in _DARK_COLOURS else (15, 15, 15)


def glyph_palette(seed: int = 0) -> list[Glyph]:
    """All ``shape x colour`` glyphs in a seeded order (neighbours rarely share shape or colour)."""
    shapes, colours = sorted(SHAPES), sorted(COLOURS)
    order = np.random.default_rng(seed).permutation(len(shapes) * len(colours))
    return [Glyph(shapes[int(k) % len(shapes)], colours[int(k) // len(shapes)]) for k in order]


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------

SKY_ELEMENTS = ("sky", "sunset", "clouds")
"""Elements of the top band: a day sky, a sunset sky, clouds in it (each implies a top band)."""
GROUND_ELEMENTS = ("water", "grass", "sand", "snow")
"""Ground textures; a scene holds at most two of them (stacked bands)."""
NIGHT = "night"
"""Global darkening of the background (with stars in the sky band)."""
SCENE_ELEMENTS = frozenset((*SKY_ELEMENTS, *GROUND_ELEMENTS, NIGHT))


@dataclass(frozen=True)
class Scene:
    """What to draw: background elements from :data:`SCENE_ELEMENTS` and glyphs (back to front)."""

    elements: frozenset[str] = frozenset()
    glyphs: tuple[Glyph, ...] = ()

    def __post_init__(self) -> None:
        unknown = self.elements - SCENE_ELEMENTS
        if unknown:
            raise ValueError(f"unknown scene elements {sorted(unknown)}")
        if len(self.elements & set(GROUND_ELEMENTS)) > 2:
            raise ValueError("a scene holds at most two ground elements")


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Blocky low-frequency noise in [-1, 1] of shape (h, w)."""
    coarse = rng.uniform(-1.0, 1.0, size=(h // cell + 1, w // cell + 1)).astype(np.float32)
    return np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:h, :w]


def _vertical_gradient(h: int, w: int, top: Sequence[float], bottom: Sequence[float]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    colours = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(colours, (h, w, 3)).copy()


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    return np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, size=3).astype(np.float32)


def _sky_band(rng: np.random.Generator, h: int, w: int, sunset: bool) -> np.ndarray:
    if sunset:
        top, bottom = _jitter(rng, (120, 60, 140), 15), _jitter(rng, (250, 150, 60), 15)
    else:
        top, bottom = _jitter(rng, (70, 130, 225), 15), _jitter(rng, (175, 210, 245), 10)
    return _vertical_gradient(h, w, top, bottom)


def _water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _jitter(rng, (30, 95, 165), 15)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    ripples = np.sin(y * rng.uniform(1.2, 1.8) + 0.15 * np.sin(x * 0.4) + rng.uniform(0, 6.3))
    return base + (22.0 * ripples)[..., None] * np.float32([0.6, 0.8, 1.0])


def _grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _jitter(rng, (70, 145, 45), 15)
    blades = np.repeat(rng.standard_normal((h // 3 + 1, w), dtype=np.float32), 3, axis=0)[:h]
    return base + (25.0 * blades)[..., None] * np.float32([0.5, 1.0, 0.4])


def _sand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _jitter(rng, (215, 190, 140), 10)
    speckle = rng.standard_normal((h, w), dtype=np.float32) * 14.0
    dunes = 12.0 * _smooth_noise(rng, h, w, 8)
    return base + (speckle + dunes)[..., None]


def _snow(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    shade = _vertical_gradient(h, w, _jitter(rng, (215, 225, 245), 8), (248, 250, 252))
    return shade + (6.0 * _smooth_noise(rng, h, w, 6))[..., None]


_GROUND_TEXTURES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "water": _water,
    "grass": _grass,
    "sand": _sand,
    "snow": _snow,
}

_NEUTRAL_TONES = (
    (110, 100, 90),
    (90, 90, 95),
    (125, 110, 80),
    (160, 150, 140),
    (140, 130, 160),
    (185, 175, 160),
)


def _neutral(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unlabelled ground or indoor wall: a muted tone with soft blotches and faint stripes."""
    base = _jitter(rng, _NEUTRAL_TONES[rng.integers(len(_NEUTRAL_TONES))], 12)
    stripes = 6.0 * np.sin(np.arange(w, dtype=np.float32) * rng.uniform(0.3, 0.9))[None, :]
    return base + (15.0 * _smooth_noise(rng, h, w, 8) + stripes)[..., None]


def _ground(rng: np.random.Generator, h: int, w: int, grounds: Sequence[str]) -> np.ndarray:
    """Fill an (h, w) band with zero (neutral), one or two stacked ground textures."""
    if not grounds:
        return _neutral(rng, h, w)
    if len(grounds) == 1:
        return _GROUND_TEXTURES[grounds[0]](rng, h, w)
    split = int(h * rng.uniform(0.35, 0.65))
    far, near = grounds
    return np.concatenate([_GROUND_TEXTURES[far](rng, split, w), _GROUND_TEXTURES[near](rng, h - split, w)])


def _draw_clouds(rng: np.random.Generator, band: np.ndarray) -> None:
    h, w = band.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(rng.integers(2, 5)):
        cx, cy = rng.uniform(0, w), rng.uniform(0.15 * h, 0.75 * h)
        rx, ry = rng.uniform(0.12, 0.25) * w, rng.uniform(0.08, 0.16) * h + 1.5
        for dx in (-0.6 * rx, 0.0, 0.6 * rx):
            blob = ((xx - cx - dx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
            band[blob] = _jitter(rng, (238, 240, 244), 8)


def _draw_stars(rng: np.random.Generator, band: np.ndarray) -> None:
    h, w = band.shape[:2]
    count = max(4, h * w // 150)
    band[rng.integers(0, h, count), rng.integers(0, w, count)] = 255.0


def _background(rng: np.random.Generator, size: int, elements: frozenset[str]) -> np.ndarray:
    grounds = [g for g in GROUND_ELEMENTS if g in elements]
    rng.shuffle(grounds)
    night = NIGHT in elements
    if not elements & set(SKY_ELEMENTS):
        image = _ground(rng, size, size, grounds)
        return image * np.float32([0.3, 0.32, 0.45]) if night else image
    horizon = int(size * rng.uniform(0.35, 0.6))
    sky = _sky_band(rng, horizon, size, sunset="sunset" in elements)
    if "clouds" in elements:
        _draw_clouds(rng, sky)
    ground = _ground(rng, size - horizon, size, grounds)
    if night:
        sky *= np.float32([0.2, 0.22, 0.4])
        ground *= np.float32([0.3, 0.32, 0.45])
        _draw_stars(rng, sky)
    return np.concatenate([sky, ground])


def _glyph_position(
    rng: np.random.Generator, size: int, placed: list[tuple[float, float]]
) -> tuple[float, float]:
    """A glyph centre far from those already placed (best of a few random candidates)."""
    candidates = rng.uniform(0.12 * size, 0.88 * size, size=(6, 2))
    if not placed:
        return float(candidates[0, 0]), float(candidates[0, 1])
    dists = np.min(np.linalg.norm(candidates[:, None] - np.asarray(placed)[None], axis=2), axis=1)
    best = candidates[int(np.argmax(dists))]
    return float(best[0]), float(best[1])


def draw_glyph(
    canvas: np.ndarray,
    glyph: Glyph,
    centre: tuple[float, float],
    diameter: float,
    angle: float,
    colour: Sequence[float],
) -> None:
    """Draw ``glyph`` (outlined) on a float (H, W, 3) canvas in place; parts off the canvas are cut."""
    cx, cy = centre
    reach = diameter / 2 * _OUTLINE_SCALE
    height, width = canvas.shape[:2]
    y0, y1 = max(0, int(cy - reach)), min(height, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(cx - reach)), min(width, int(np.ceil(cx + reach)) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    du, dv = (xx + 0.5 - cx) / (diameter / 2), (yy + 0.5 - cy) / (diameter / 2)
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * du + sin * dv, cos * dv - sin * du
    mask = SHAPES[glyph.shape]
    patch = canvas[y0:y1, x0:x1]
    patch[mask(u / _OUTLINE_SCALE, v / _OUTLINE_SCALE)] = glyph.outline_rgb()
    patch[mask(u, v)] = colour


def render_scene(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``scene`` as a (size, size, 3) uint8 RGB image.

    Glyph diameters are 20-32 % of the image side, rotated by up to ~20 degrees, with a jittered
    colour; glyphs are placed apart when possible but may overlap (later ones occlude earlier).
    """
    canvas = _background(rng, size, scene.elements)
    placed: list[tuple[float, float]] = []
    for glyph in scene.glyphs:
        centre = _glyph_position(rng, size, placed)
        placed.append(centre)
        diameter = rng.uniform(0.2, 0.32) * size
        angle = rng.uniform(-0.35, 0.35)
        draw_glyph(canvas, glyph, centre, diameter, angle, _jitter(rng, COLOURS[glyph.colour], 18))
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * 5.0
    return np.clip(canvas, 0, 255).astype(np.uint8)


def save_jpeg(image: np.ndarray, path: Path, quality: int = 90) -> None:
    """Write an RGB uint8 array as a baseline JPEG (deterministic bytes for the same array)."""
    Image.fromarray(image, mode="RGB").save(path, format="JPEG", quality=quality)


# --------------------------------------------------------------------------------------------
# Concept registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptRegistry:
    """Visual signature of each concept of a dataset: a glyph or a scene element.

    ``spare`` holds the glyphs no concept uses; they are drawn as unlabelled distractors.
    """

    glyphs: Mapping[str, Glyph]
    elements: Mapping[str, str]
    spare: tuple[Glyph, ...]

    @classmethod
    def build(cls, concepts: Iterable[str], elements: Mapping[str, str], *, seed: int = 0) -> ConceptRegistry:
        """Give every concept not in ``elements`` (concept -> scene element) its own glyph."""
        unknown = set(elements.values()) - SCENE_ELEMENTS
        if unknown:
            raise ValueError(f"unknown scene elements {sorted(unknown)}")
        objects = [c for c in concepts if c not in elements]
        palette = glyph_palette(seed)
        if len(objects) > len(palette):
            raise ValueError(f"{len(objects)} object concepts but only {len(palette)} glyphs")
        return cls(
            glyphs=dict(zip(objects, palette)),
            elements=dict(elements),
            spare=tuple(palette[len(objects) :]),
        )

    def scene(
        self,
        concepts: Iterable[str],
        rng: np.random.Generator,
        *,
        distractor_prob: float = 0.3,
        max_distractors: int = 2,
    ) -> Scene:
        """The scene showing ``concepts`` (glyphs in random depth order) plus random distractors."""
        present = list(concepts)
        glyphs = [self.glyphs[c] for c in present if c in self.glyphs]
        for _ in range(max_distractors):
            if rng.random() < distractor_prob:
                glyphs.append(self.spare[rng.integers(len(self.spare))])
        order = rng.permutation(len(glyphs))
        return Scene(
            elements=frozenset(self.elements[c] for c in present if c in self.elements),
            glyphs=tuple(glyphs[i] for i in order),
        )


# --------------------------------------------------------------------------------------------
# Noisy text
# --------------------------------------------------------------------------------------------


def zipf_weights(n: int, exponent: float = 1.0, offset: float = 1.0) -> np.ndarray:
    """Normalised weights ``1 / (rank + offset) ** exponent`` for ranks 0..n-1."""
    weights = 1.0 / (np.arange(n, dtype=np.float64) + offset) ** exponent
    return weights / weights.sum()


FILLER_WORDS: tuple[str, ...] = (
    # photography, most popular first
    "explore", "photo", "photography", "canon", "nikon", "travel", "art", "macro", "light",
    "color", "blackandwhite", "bw", "digital", "vacation", "sony", "olympus", "pentax", "holiday",
    "landscape", "nature", "city", "urban", "vintage", "hdr", "film", "abstract", "texture",
    "summer", "spring", "autumn", "fall", "evening", "morning", "day", "family", "friends",
    "travelphotography", "trip", "panorama", "closeup", "bokeh", "dslr", "lens", "zoom",
    "longexposure", "monochrome", "sepia", "lomo", "holga", "polaroid", "fuji", "fujifilm",
    "panasonic", "lumix", "kodak", "leica", "samsung", "casio", "minolta", "ricoh", "sigma",
    "tamron", "slr", "iphone", "tripod", "flash", "shadow", "colour", "colors", "retro",
    "pattern", "composition", "dof", "wideangle", "telephoto", "50mm", "18mm", "55mm", "200mm",
    "flickr", "pictures", "picture", "image", "pic", "snapshot", "amateur", "tourist", "tourism",
    "outdoor", "outdoors", "indoor", "afternoon", "weekend", "happy", "cute", "funny",
    "beautiful", "pretty", "love", "life", "old", "new", "big", "small", "little", "wild",
    "quiet", "peace", "calm", "dark", "bright", "colorful", "detail", "details", "perspective",
    "geometry", "minimal", "lines", "curves", "symmetry", "silhouette", "contrast", "blur",
    "motion", "candid", "documentary", "history", "historic", "ancient", "modern", "museum",
    "park", "zoo", "festival", "concert", "music", "party", "birthday", "christmas",
    "halloween", "holidays", "celebration", "parade", "market", "shop", "cafe", "restaurant",
    "university", "school", "church", "cathedral", "square", "suburb",
    "countryside", "rural", "farm", "field", "hill", "hills", "island", "coast", "river",
    "canal", "path", "trail", "hiking", "camping", "roadtrip", "adventure", "journey",
    # colours
    "red", "blue", "green", "yellow", "orange", "white", "black", "pink", "purple", "brown",
    "gray", "grey", "gold", "silver", "golden", "turquoise",
    # months
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
    # years
    *(str(year) for year in range(2009, 1979, -1)),
    # places
    "california", "usa", "london", "paris", "newyork", "japan", "italy", "france", "england",
    "germany", "spain", "canada", "tokyo", "china", "uk", "europe", "australia", "india",
    "sanfrancisco", "berlin", "rome", "barcelona", "amsterdam", "prague", "vienna", "sydney",
    "melbourne", "toronto", "vancouver", "chicago", "boston", "seattle", "losangeles", "texas",
    "florida", "hawaii", "alaska", "oregon", "washington", "mexico", "brazil", "argentina",
    "peru", "chile", "america", "scotland", "ireland", "wales", "portugal", "greece", "turkey",
    "egypt", "morocco", "kenya", "korea", "thailand", "vietnam", "singapore", "malaysia",
    "indonesia", "newzealand", "iceland", "norway", "sweden", "finland", "denmark",
    "netherlands", "belgium", "switzerland", "austria", "poland", "hungary", "russia",
    "croatia", "asia", "africa", "venice", "florence", "milan", "naples", "lisbon", "dublin",
    "edinburgh", "munich", "hamburg", "istanbul", "cairo", "beijing", "shanghai", "hongkong",
    "kyoto", "osaka", "seoul", "bangkok", "delhi", "mumbai", "dubai", "rio", "lima", "havana",
    "quebec", "montreal", "denver", "austin", "miami", "atlanta", "portland", "yosemite",
    "utah", "arizona", "nevada", "colorado", "newmexico", "michigan", "ohio", "newjersey",
    "brooklyn", "manhattan", "bavaria", "tuscany", "provence", "normandy", "andalucia",
)  # fmt: skip
"""Plausible irrelevant Flickr-style tags (camera, places, years, photo jargon), popular first."""

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")


def pseudo_words(count: int, rng: np.random.Generator, exclude: Iterable[str] = ()) -> list[str]:
    """``count`` distinct made-up words (usernames, group names...) not in ``exclude``."""
    taken = set(exclude)
    words: list[str] = []
    while len(words) < count:
        syllables = rng.integers(2, 4)
        word = "".join(
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
            for _ in range(syllables)
        )
        if rng.random() < 0.2:
            word += str(rng.integers(1, 100))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def build_vocabulary(reserved: Sequence[str], size: int, *, seed: int = 0) -> list[str]:
    """A vocabulary of exactly ``size`` distinct words: ``reserved`` first, then filler words.

    Filler comes from :data:`FILLER_WORDS` (skipping reserved words), then seeded
    :func:`pseudo_words`; it is in decreasing popularity order, suitable for :func:`zipf_weights`.
    """
    vocab = list(dict.fromkeys(reserved))
    if len(vocab) > size:
        raise ValueError(f"{len(vocab)} reserved words exceed the vocabulary size {size}")
    taken = set(vocab)
    vocab += [w for w in dict.fromkeys(FILLER_WORDS) if w not in taken][: size - len(vocab)]
    missing = size - len(vocab)
    return vocab + pseudo_words(missing, np.random.default_rng(seed), exclude=vocab)

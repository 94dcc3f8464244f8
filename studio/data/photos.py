"""Files scikit-image and scikit-learn ship: the photographs with their provenance, and `package_file`.

Credits and licenses are quoted from the `skimage.data` docstrings and from
`sklearn/datasets/images/README.txt` of the installed packages; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # "skimage" or "sklearn"
    file: str
    credit: str
    license: str

    @property
    def where(self) -> str:
        """The file's path inside its installed package."""
        folder = "skimage/data" if self.package == "skimage" else "sklearn/datasets/images"
        return f"{folder}/{self.file}"


PHOTOS: dict[str, Photo] = {p.name: p for p in (
    Photo("astronaut", "skimage", "astronaut.png", "Eileen Collins, NASA Great Images database",
          "public domain (no known copyright restrictions)"),
    Photo("coffee", "skimage", "coffee.png", "Rachel Michetti, courtesy of Pikolo Espresso Bar", "CC0"),
    Photo("chelsea", "skimage", "chelsea.png", "Stefan van der Walt", "CC0"),
    Photo("rocket", "skimage", "rocket.jpg", "SpaceX, DSCOVR launch on Falcon 9", "public domain (released by SpaceX)"),
    Photo("hubble_deep_field", "skimage", "hubble_deep_field.jpg", "NASA, Hubble eXtreme Deep Field (HubbleSite)",
          "public domain (NASA media guidelines)"),
    Photo("retina", "skimage", "retina.jpg", "Mikael Haggstrom, Wikimedia Commons fundus photograph", "CC0 1.0"),
    Photo("immunohistochemistry", "skimage", "ihc.png",
          "Center for Microscopy And Molecular Imaging (CMMI), IHC staining", "no known copyright restrictions"),
    Photo("motorcycle", "skimage", "motorcycle_left.png",
          "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), left view downsampled x4",
          "not stated by scikit-image; cite Scharstein et al. 2014"),
    Photo("china", "sklearn", "china.jpg", "Flickr user danielbuechele, retrieved by Robert Layton", "CC BY 2.0"),
    Photo("flower", "sklearn", "flower.jpg", "Flickr user vultilion, retrieved by Robert Layton", "CC BY 2.0"),
    Photo("brick", "skimage", "brick.png", "CC0Textures Bricks25, perspective-corrected, gray", "CC0"),
    Photo("grass", "skimage", "grass.png", "DeviantArt linolafett Grass-01, cropped, gray", "CC0"),
    Photo("gravel", "skimage", "gravel.png", "CC0Textures Gravel04, rescaled and cropped, gray", "CC0"),
)}


def package_file(where: str) -> Path:
    """Path of a file shipped inside an installed package ("sklearn/datasets/images/china.jpg").

    Found without importing the package: importing sklearn.datasets alone costs seconds.
    """
    package, _, inner = where.partition("/")
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent / inner if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise ValueError(f"dataset: bundled file {where} is missing; is {package} installed?")
    return path


def load_photo(name: str) -> np.ndarray:
    """uint8 [H, W, 3] (color photos) or [H, W] (gray textures) from the installed package file."""
    with Image.open(package_file(PHOTOS[name].where)) as image:
        return np.asarray(image.convert("L" if image.mode in ("1", "L", "LA") else "RGB"))


def provenance(names: list[str], summary: str) -> tuple[str, str]:
    """(source, license) texts: a one-line summary, then one line per file."""
    photos = [PHOTOS[n] for n in names]
    licenses = sorted({p.license.split(" (")[0].split(";")[0] for p in photos})
    source = "\n".join([summary] + [f"{p.name}: {p.where} ({p.credit})" for p in photos])
    license_text = "\n".join(["per image: " + ", ".join(licenses)] + [f"{p.name}: {p.license}" for p in photos])
    return source, license_text

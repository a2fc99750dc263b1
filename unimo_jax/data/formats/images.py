"""Image files for pixel mode: decoding (Pillow) and the training / evaluation transforms.

decode_image     encoded bytes (JPEG, PNG, or anything Pillow reads) -> RGB uint8 [H, W, 3]; grey,
                 palette, 16-bit, RGBA / LA (alpha dropped) and CMYK images are converted; bytes
                 that are not an image, or a truncated file, raise DataError naming `where`.
train_crop       a random resized crop (area fraction in [0.35, 1], aspect ratio in [3/4, 4/3]),
                 resized to size x size: the usual training augmentation. There is no horizontal
                 flip: captions say "left of" and "right of".
eval_crop        the shorter side resized to `size`, then the centre size x size: deterministic.
Both resize with Pillow's bicubic filter straight from the crop box of the decoded image.
"""

import io
import math
import pathlib

import numpy as np

from unimo_jax.errors import DataError

AREA = (0.35, 1.0)
ASPECT = (3 / 4, 4 / 3)


def _pil():
  from PIL import Image
  return Image


def decode_image(data: bytes, where: str = "image") -> np.ndarray:
  """RGB uint8 [H, W, 3] of an encoded image."""
  Image = _pil()
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # decodes now: a truncated file fails here, not later
      if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
        array = np.asarray(image, np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(array[..., None], 3, axis=-1)
      rgb = image.convert("RGB")  # L, P, LA, RGBA (alpha dropped), CMYK, YCbCr, ...
      return np.asarray(rgb, np.uint8).copy()
  except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
    kind = type(e).__name__
    raise DataError(f"{where}: expected an image file (JPEG, PNG, ...), could not decode it "
                    f"({kind}: {e})") from None


def read_image(path, where: str = "") -> np.ndarray:
  """decode_image of a file; a missing file is a DataError naming it."""
  return decode_image(_file_bytes(path, where), _name(path, where))


def checked_image_bytes(path, where: str = "") -> bytes:
  """A file's encoded bytes, read once and checked to decode (DataError naming it otherwise)."""
  data = _file_bytes(path, where)
  decode_image(data, _name(path, where))
  return data


def _file_bytes(path, where):
  path = pathlib.Path(path)
  try:
    return path.read_bytes()
  except OSError as e:
    raise DataError(f"{where or path}: could not read image file {path} ({e.strerror})") from None


def _name(path, where):
  return f"{where}: {path}" if where else str(path)


def _resized(image: np.ndarray, box, size: int) -> np.ndarray:
  Image = _pil()
  out = Image.fromarray(image).resize((size, size), Image.BICUBIC, box=box)
  return np.asarray(out, np.uint8)


def eval_crop(image: np.ndarray, size: int) -> np.ndarray:
  """[size, size, 3]: the centre square of the image, resized (shorter side -> size)."""
  h, w = image.shape[:2]
  side = min(h, w)
  left, top = (w - side) / 2, (h - side) / 2
  return _resized(image, (left, top, left + side, top + side), size)


def train_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """[size, size, 3]: a random crop of AREA of the image at an aspect ratio in ASPECT, resized;
  after 10 draws that do not fit, the centre crop."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*AREA)
    aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
    cw, ch = math.sqrt(area * aspect), math.sqrt(area / aspect)
    if cw <= w and ch <= h:
      left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
      return _resized(image, (left, top, left + cw, top + ch), size)
  return eval_crop(image, size)

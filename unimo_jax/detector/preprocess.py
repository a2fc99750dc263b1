"""Image -> the detector's input, as bottom-up-attention's lib/fast_rcnn/test.py _get_image_blob
prepares it: BGR float32 minus the pixel means (no std), resized by one factor s so that the
shorter side is short_side (600) unless the longer would then exceed max_side (1000), with
OpenCV's bilinear resize (cv2.resize(im, None, None, fx=s, fy=s, INTER_LINEAR)), then padded
with zeros to a size bucket.

The resize is OpenCV's float path written out in numpy: output size round(W * s) x round(H * s);
source coordinate (x + 0.5) / s - 0.5 per output pixel, clamped at the borders, weights
(1 - f, f) horizontally then vertically; an exact 2x reduction averages 2 x 2 blocks, as OpenCV
switches to INTER_AREA there.
"""

import numpy as np

from unimo_jax.detector.config import DetectorConfig
from unimo_jax.errors import DataError


def scale_factor(height: int, width: int, short_side: int, max_side: int) -> float:
  scale = short_side / min(height, width)
  if np.round(scale * max(height, width)) > max_side:
    scale = max_side / max(height, width)
  return float(scale)


def _taps(source: int, target: int, scale: float):
  """(index [target], weight [target]) of the left tap and its right weight along one axis."""
  position = ((np.arange(target) + 0.5) * (1.0 / scale) - 0.5).astype(np.float32)
  index = np.floor(position).astype(np.int64)
  frac = (position - index).astype(np.float32)
  low = index < 0
  frac[low], index[low] = 0.0, 0
  high = index >= source - 1
  frac[high], index[high] = 0.0, source - 1
  return index, frac


def resize_bilinear(image: np.ndarray, scale: float) -> np.ndarray:
  """[H, W, C] float32 -> [round(H * s), round(W * s), C] as cv2.resize INTER_LINEAR with
  fx = fy = scale."""
  height, width = image.shape[:2]
  out_h, out_w = int(np.round(height * scale)), int(np.round(width * scale))
  if out_h * 2 == height and out_w * 2 == width and scale == 0.5:
    blocks = image.reshape(out_h, 2, out_w, 2, -1).astype(np.float32)
    return ((blocks[:, 0, :, 0] + blocks[:, 0, :, 1] + blocks[:, 1, :, 0] + blocks[:, 1, :, 1])
            * np.float32(0.25))
  xi, xf = _taps(width, out_w, scale)
  yi, yf = _taps(height, out_h, scale)
  xj, yj = np.minimum(xi + 1, width - 1), np.minimum(yi + 1, height - 1)
  xf, yf = xf[None, :, None], yf[:, None, None]
  upper, lower = image[yi], image[yj]
  top = upper[:, xi] * (1 - xf) + upper[:, xj] * xf
  bottom = lower[:, xi] * (1 - xf) + lower[:, xj] * xf
  return (top * (1 - yf) + bottom * yf).astype(np.float32)


def bucket_for(height: int, width: int, buckets) -> tuple:
  """The smallest (by area) bucket holding a height x width image."""
  fits = [b for b in buckets if b[0] >= height and b[1] >= width]
  if not fits:
    raise DataError(f"a resized image of {height}x{width} fits no detector bucket {list(buckets)}"
                    "; add one to DetectorConfig.buckets")
  return min(fits, key=lambda b: (b[0] * b[1], b))


def prepare(rgb: np.ndarray, config: DetectorConfig):
  """RGB uint8 [H, W, 3] -> (BGR mean-subtracted resized float32 [h, w, 3], scale)."""
  bgr = rgb[..., ::-1].astype(np.float32) - np.asarray(config.pixel_means, np.float32)
  scale = scale_factor(rgb.shape[0], rgb.shape[1], config.short_side, config.max_side)
  return resize_bilinear(bgr, scale), scale


def pad_to(image: np.ndarray, bucket) -> np.ndarray:
  out = np.zeros((bucket[0], bucket[1], 3), np.float32)
  out[:image.shape[0], :image.shape[1]] = image
  return out

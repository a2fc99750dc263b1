"""RoIPool as Caffe's ROIPooling layer computes it (caffe/src/caffe/layers/roi_pooling_layer.cu,
bottom-up-attention's fork; torchvision's roi_pool does the same arithmetic).

A region (x1, y1, x2, y2) maps to feature cells round(x1 * scale) .. round(x2 * scale), with C
round (half away from zero), at least one cell wide. Bin p of P covers [floor(p * size / P),
ceil((p + 1) * size / P)) of them, clipped to the map; a bin's output is its maximum, 0 if empty.

A bin spans at most ceil((map + 1) / P) + 1 cells, so each bin gathers that many rows, then that
many columns, instead of masking the whole map per bin.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _round_half_away(x):
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _bin_offsets(max_size: int, pooled: int):
  """[max_size + 1, P] (begin, end) offsets of each bin for every region size, computed in numpy
  float32 exactly as the Caffe kernel does (floor(p * (size / P)), ceil((p + 1) * (size / P))).
  A table, because a compiler may turn the division into a multiply by 1 / P, which moves the
  product across an integer for some sizes (6 / 14 * 7 must be 3.0, not 3.0000002)."""
  size = np.arange(max_size + 1, dtype=np.float32)[:, None]
  bin_size = size / np.float32(pooled)
  p = np.arange(pooled, dtype=np.float32)[None]
  return (np.floor(p * bin_size).astype(np.int32), np.ceil((p + 1) * bin_size).astype(np.int32))


def _bin_ranges(start, end, pooled: int, limit, map_size: int):
  """[R, P] (begin, end) cell ranges of each bin along one axis; limit: the valid map size."""
  size = jnp.clip(end - start + 1, 1, map_size + 1)  # [R]
  begin_table, end_table = _bin_offsets(map_size + 1, pooled)
  begin = jnp.asarray(begin_table)[size] + start[:, None]
  finish = jnp.asarray(end_table)[size] + start[:, None]
  return jnp.clip(begin, 0, limit), jnp.clip(finish, 0, limit)


def _window_max(values, begin, finish, span: int, axis: int):
  """Max over [begin, finish) along `axis` of values [R, ...] (region-first), for begin/finish
  [R, P]: the axis becomes P bins; an empty bin gives -inf."""
  index = begin[..., None] + jnp.arange(span)  # [R, P, span]
  inside = index < finish[..., None]
  index = jnp.clip(index, 0, values.shape[axis] - 1)
  shape = [1] * values.ndim
  shape[0], shape[axis] = index.shape[0], -1
  gathered = jnp.take_along_axis(values, index.reshape(shape), axis=axis)
  split = list(values.shape)
  split[axis:axis + 1] = list(index.shape[1:])
  mask_shape = [1] * len(split)
  mask_shape[0], mask_shape[axis], mask_shape[axis + 1] = inside.shape
  masked = jnp.where(inside.reshape(mask_shape), gathered.reshape(split), -jnp.inf)
  return jnp.max(masked, axis=axis + 1)


def roi_pool(feature_map, rois, valid_hw, pooled: int = 14, spatial_scale: float = 1 / 16,
             chunk: int = 50):
  """[H, W, C] map of one image, [R, 4] regions in input pixels, valid (h, w) of the map ->
  [R, pooled, pooled, C]. Regions go `chunk` at a time, which bounds the [chunk, pooled, W, C]
  row maxima held at once."""
  height, width, channels = feature_map.shape
  num = rois.shape[0]
  chunk = chunk if num % chunk == 0 else num
  span_h, span_w = -(-(height + 1) // pooled) + 1, -(-(width + 1) // pooled) + 1

  def pool_chunk(chunk_rois):
    starts = _round_half_away(chunk_rois * spatial_scale).astype(jnp.int32)  # [r, 4]
    x_begin, x_end = _bin_ranges(starts[:, 0], starts[:, 2], pooled, valid_hw[1], width)
    y_begin, y_end = _bin_ranges(starts[:, 1], starts[:, 3], pooled, valid_hw[0], height)
    maps = jnp.broadcast_to(feature_map[None], (chunk_rois.shape[0], height, width, channels))
    rows = _window_max(maps, y_begin, y_end, span_h, axis=1)  # [r, P, W, C]
    return _window_max(rows, x_begin, x_end, span_w, axis=2)  # [r, P, P, C]

  out = jax.lax.map(pool_chunk, rois.reshape(num // chunk, chunk, 4))
  out = out.reshape(num, pooled, pooled, channels)
  return jnp.where(jnp.isneginf(out), 0.0, out).astype(feature_map.dtype)

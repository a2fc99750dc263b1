"""The Caffe ResNet-101 of bottom-up-attention: the C4 trunk, the RPN head and the res5 box head
(models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt).

What differs from a torchvision ResNet: every conv is bias-free and followed by BatchNorm + Scale,
folded here into the conv's kernel and bias; stride 2 sits in the first 1x1 conv of res3a / res4a
(and their 1x1 shortcuts), not in the 3x3; pool1 is a 3x3 / 2 max pool with no padding and
ceil-mode output size; res5 runs per region on the 14 x 14 pooled map at stride 1 with its 3x3
convs dilated by 2 (pad 2). Padding is the prototxt's explicit, symmetric padding.

Images are padded to a fixed bucket size. So that a padded image gives the features of the
unpadded one (the original runs each image at its own size), every map is zeroed outside the
image's valid region before a conv or pool that reads neighbours (zeros are what the unpadded
network's own padding supplies; the max pool gets -inf, as Caffe's pooling ignores its padding).

Parameters: {'kernel': [kh, kw, in, out], 'bias': [out]} per conv, nested as
{'conv1', 'res2': {'0': {'conv1', 'conv2', 'conv3', 'shortcut'}, '1': ...}, 'res3', 'res4'} for
the trunk, the same per block for 'res5', and {'conv', 'cls', 'bbox'} for 'rpn'.
"""

import jax
import jax.numpy as jnp


def conv(x, p, stride=1, padding=0, dilation=1):
  """[B, H, W, in] -> [B, H', W', out] with explicit symmetric padding."""
  y = jax.lax.conv_general_dilated(
      x, p["kernel"].astype(x.dtype), window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)), rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + p["bias"].astype(x.dtype)


def conv_out_size(size, kernel, stride, padding, dilation=1):
  """Caffe's convolution output size (floor)."""
  return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_out_size(size, kernel=3, stride=2):
  """Caffe's pooling output size with no padding (ceil mode)."""
  return -(-(size - kernel) // stride) + 1


def valid_mask(valid_hw, height: int, width: int):
  """[B, height, width, 1] bool: inside each image's valid (h, w) of [B, 2]."""
  rows = jnp.arange(height)[None, :, None] < valid_hw[:, 0, None, None]
  cols = jnp.arange(width)[None, None, :] < valid_hw[:, 1, None, None]
  return (rows & cols)[..., None]


def _zero_outside(x, valid_hw):
  return jnp.where(valid_mask(valid_hw, x.shape[1], x.shape[2]), x, 0).astype(x.dtype)


def max_pool_ceil(x, valid_hw):
  """pool1: 3x3 / 2 max pool, ceil-mode output size over the valid region."""
  height, width = x.shape[1], x.shape[2]
  x = jnp.where(valid_mask(valid_hw, height, width), x, -jnp.inf).astype(x.dtype)
  out_h, out_w = pool_out_size(height), pool_out_size(width)
  pad_h, pad_w = (out_h - 1) * 2 + 3 - height, (out_w - 1) * 2 + 3 - width
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, 3, 3, 1),
                               (1, 2, 2, 1), ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))


def bottleneck(x, p, valid_hw, stride=1, dilation=1):
  """One residual block: 1x1 (stride) -> 3x3 (dilation) -> 1x1, plus the shortcut, ReLU.
  valid_hw: [B, 2] valid size of the block's output, or None when nothing is padded."""
  shortcut = conv(x, p["shortcut"], stride) if "shortcut" in p else x
  y = jax.nn.relu(conv(x, p["conv1"], stride))
  if valid_hw is not None:
    y = _zero_outside(y, valid_hw)
  y = jax.nn.relu(conv(y, p["conv2"], padding=dilation, dilation=dilation))
  y = conv(y, p["conv3"])
  return jax.nn.relu(y + shortcut)


def _stage(x, blocks, valid_hw, stride, dilation=1):
  for i in range(len(blocks)):
    x = bottleneck(x, blocks[str(i)], valid_hw, stride if i == 0 else 1, dilation)
  return x


def trunk_valid_sizes(valid_hw):
  """[B, 2] valid size after conv1, pool1, res3 and res4 (= the C4 map) for [B, 2] input sizes."""
  conv1 = conv_out_size(valid_hw, 7, 2, 3)
  pool1 = pool_out_size(conv1)
  res3 = conv_out_size(pool1, 1, 2, 0)
  res4 = conv_out_size(res3, 1, 2, 0)
  return conv1, pool1, res3, res4


def c4_features(params, images, valid_hw):
  """[B, H, W, 3] mean-subtracted BGR images, zero beyond each [B, 2] valid size ->
  [B, H/16, W/16, 4 * 4 * stem_width] res4b22 after its ReLU (1024 channels for ResNet-101)."""
  conv1_hw, pool1_hw, res3_hw, res4_hw = trunk_valid_sizes(valid_hw)
  x = jax.nn.relu(conv(images, params["conv1"], stride=2, padding=3))
  x = max_pool_ceil(x, conv1_hw)
  x = _stage(x, params["res2"], pool1_hw, 1)
  x = _stage(x, params["res3"], res3_hw, 2)  # 1x1 convs read no neighbours: no mask before them
  x = _stage(x, params["res4"], res4_hw, 2)
  return _zero_outside(x, res4_hw)


def rpn_head(params, c4, valid_hw):
  """C4 map [B, h, w, C] -> (foreground probability [B, h * w * A], deltas [B, h * w * A, 4]),
  flattened (y, x, anchor). rpn_cls_score's channels are A background then A foreground scores,
  softmaxed in pairs (rpn_cls_prob_reshape); deltas are channel 4a + (dx, dy, dw, dh)."""
  x = jax.nn.relu(conv(c4, params["conv"], padding=1))
  scores = conv(x, params["cls"])  # [B, h, w, 2A]
  deltas = conv(x, params["bbox"])  # [B, h, w, 4A]
  batch, height, width, two_a = scores.shape
  a = two_a // 2
  foreground = jax.nn.sigmoid(scores[..., a:] - scores[..., :a])  # = softmax over the pair
  return (foreground.reshape(batch, height * width * a),
          deltas.reshape(batch, height * width * a, 4))


def res5_head(params, pooled):
  """[R, 14, 14, C4] pooled regions -> [R, 32 * stem_width] pool5_flat: res5a..c at stride 1
  with dilation 2, then the mean over the 14 x 14 map."""
  x = _stage(pooled, params, None, 1, dilation=2)
  return jnp.mean(x, axis=(1, 2))

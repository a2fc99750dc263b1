"""Creating, counting and re-laying-out the parameter tree."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unimo_jax.model.unimo import Unimo

# Parameter groups that make up the encoder proper (embeddings + layers, no heads).
ENCODER_GROUPS = ("text_embeddings", "region_embeddings", "pixel_embeddings", "encoder")


def init_batch(config, batch_size: int = 1, text_length: int = 8, regions: int = 4) -> dict:
  """A minimal image+text batch whose forward pass creates every parameter of the model."""
  batch = {"input_ids": np.full((batch_size, text_length), config.pad_token_id + 1, np.int32)}
  if config.image_input == "regions":
    batch["region_features"] = np.zeros((batch_size, regions, config.region_feature_dim), np.float32)
    batch["region_locations"] = np.zeros((batch_size, regions, 5), np.float32)
    batch["region_mask"] = np.ones((batch_size, regions), bool)
  else:
    s = config.image_size
    batch["pixels"] = np.zeros((batch_size, s, s, config.image_channels), np.float32)
  return batch


def init_boxed_params(config, rng):
  """Parameters with their logical-axis metadata (nn.Partitioned leaves)."""
  return Unimo(config).init({"params": rng}, init_batch(config))["params"]


def init_params(config, rng):
  """Plain parameter tree (jax.Arrays) of Unimo(config)."""
  return nn.unbox(init_boxed_params(config, rng))


def abstract_params(config):
  """ShapeDtypeStructs of the parameter tree, boxed with logical-axis metadata; nothing allocated."""
  return jax.eval_shape(lambda: init_boxed_params(config, jax.random.key(0)))


def strip_boxes(tree):
  """The values inside nn.Partitioned boxes, without applying their sharding constraints."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def count_params(params, groups=None) -> int:
  """Number of scalars in `params` (or in its top-level `groups` only)."""
  params = strip_boxes(params)
  if groups is not None:
    params = {k: v for k, v in params.items() if k in groups}
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def stack_layers(params, num_layers: int):
  """Unrolled layout (encoder/layer_{i}) -> scanned layout (encoder/layers/layer, axis 0 = layer)."""
  params = dict(params)
  layers = [params["encoder"][f"layer_{i}"] for i in range(num_layers)]
  params["encoder"] = {"layers": {"layer": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}}
  return params


def unstack_layers(params, num_layers: int):
  """Scanned layout -> unrolled layout; inverse of stack_layers."""
  params = dict(params)
  stacked = params["encoder"]["layers"]["layer"]
  params["encoder"] = {f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked)
                       for i in range(num_layers)}
  return params


def is_scanned(params) -> bool:
  return "layers" in params.get("encoder", {})


def layer_layouts_differ(params, like) -> bool:
  """Whether one tree has scanned layers and the other unrolled ones (both with an encoder)."""
  return ("encoder" in params and "encoder" in like
          and is_scanned(params) != is_scanned(like))


def matching_layer_layout(params, like):
  """`params` in the layer layout of `like` (scanned or unrolled), e.g. converted RoBERTa
  weights (unrolled) for a scanned model; unchanged when the layouts already agree or the tree
  has no encoder. Works on any nesting where the UNIMO groups are at the top."""
  if not layer_layouts_differ(params, like):
    return params
  if is_scanned(like):
    count = sum(1 for k in params["encoder"] if k.startswith("layer_"))
    return stack_layers(params, count)
  count = len(jax.tree.leaves(params["encoder"]["layers"])[0])
  return unstack_layers(params, count)

"""Released UNIMO (PaddlePaddle 1.x) checkpoints -> unimo_jax parameters, read with numpy only.

A Paddle 1.x persistables directory holds one file per variable, named by the variable, each a
serialized LoDTensor:
  uint32 version (0) | uint64 lod_level | per level: uint64 byte size + that many bytes of offsets |
  uint32 tensor version (0) | int32 desc size | TensorDesc protobuf (field 1: data type enum,
  field 2: dims, int64) | raw little-endian data.
Dense weights are stored [in, out] like Flax kernels; attention kernels are reshaped to
[hidden, heads, head_dim] (output: [heads, head_dim, hidden]). Names: spec §5.2.
"""

import json
import pathlib
import struct

import jax
import numpy as np

from unimo_jax.convert.roberta import bert_style_config
from unimo_jax.model.params import init_params, stack_layers

# Paddle's VarType.Type values for tensor data.
PADDLE_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16,
                 5: np.float32, 6: np.float64, 20: np.uint8, 21: np.int8}


class PaddleFormatError(ValueError):
  pass


def _varint(buf, pos, where):
  value, shift = 0, 0
  while True:
    if pos >= len(buf):
      raise PaddleFormatError(f"{where}: TensorDesc ends inside a varint")
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value, pos


def _signed64(value):
  return value - (1 << 64) if value >= 1 << 63 else value


def parse_tensor_desc(buf: bytes, where: str = "TensorDesc"):
  """(numpy dtype, dims) from TensorDesc protobuf bytes (dims packed or not)."""
  pos, data_type, dims = 0, None, []
  while pos < len(buf):
    key, pos = _varint(buf, pos, where)
    field, wire = key >> 3, key & 7
    if field == 1 and wire == 0:
      data_type, pos = _varint(buf, pos, where)
    elif field == 2 and wire == 0:
      dim, pos = _varint(buf, pos, where)
      dims.append(_signed64(dim))
    elif field == 2 and wire == 2:
      size, pos = _varint(buf, pos, where)
      end = pos + size
      while pos < end:
        dim, pos = _varint(buf, pos, where)
        dims.append(_signed64(dim))
    else:
      raise PaddleFormatError(f"{where}: unexpected protobuf field {field} (wire type {wire})")
  if data_type not in PADDLE_DTYPES:
    raise PaddleFormatError(f"{where}: expected a data type in {sorted(PADDLE_DTYPES)}, found "
                            f"{data_type}")
  if any(d < 0 for d in dims):
    raise PaddleFormatError(f"{where}: expected non-negative dims, found {dims}")
  return np.dtype(PADDLE_DTYPES[data_type]), tuple(dims)


def read_lod_tensor(path) -> np.ndarray:
  """The array in one Paddle LoDTensor file (its LoD, if any, is read and dropped)."""
  path = pathlib.Path(path)
  buf = path.read_bytes()
  pos = 0

  def take(n, what):
    nonlocal pos
    if pos + n > len(buf):
      raise PaddleFormatError(f"{path}: truncated: expected {n} bytes of {what} at offset {pos}, "
                              f"the file has {len(buf)}")
    out = buf[pos:pos + n]
    pos += n
    return out

  version, = struct.unpack("<I", take(4, "the LoDTensor version"))
  if version != 0:
    raise PaddleFormatError(f"{path}: expected LoDTensor version 0, found {version}")
  levels, = struct.unpack("<Q", take(8, "the LoD level count"))
  if levels > 16:
    raise PaddleFormatError(f"{path}: expected a small LoD level count, found {levels}")
  for _ in range(levels):
    size, = struct.unpack("<Q", take(8, "a LoD level size"))
    take(size, "a LoD level")
  tensor_version, = struct.unpack("<I", take(4, "the tensor version"))
  if tensor_version != 0:
    raise PaddleFormatError(f"{path}: expected tensor version 0, found {tensor_version}")
  desc_size, = struct.unpack("<i", take(4, "the TensorDesc size"))
  if desc_size < 0:
    raise PaddleFormatError(f"{path}: negative TensorDesc size {desc_size}")
  dtype, dims = parse_tensor_desc(take(desc_size, "the TensorDesc"), str(path))
  count = int(np.prod(dims, dtype=np.int64))
  data = take(count * dtype.itemsize, f"{count} {dtype} values")
  if pos != len(buf):
    raise PaddleFormatError(f"{path}: {len(buf) - pos} unexpected bytes after the tensor data")
  return np.frombuffer(data, dtype.newbyteorder("<")).reshape(dims).astype(dtype)


def config_from_unimo(unimo: dict, base: str = "base"):
  """Our model config from UNIMO's JSON config (unimo_{base,large}_en.json); the FFN is 4 x hidden
  (d_inner_hid = emb_size * 4 in UNIMO's code)."""
  c = bert_style_config(unimo, "UNIMO config", base)
  c.region_feature_dim = unimo.get("image_embedding_size", c.region_feature_dim)
  c.num_region_classes = unimo.get("image_class_size", c.num_region_classes)
  return c


def unimo_name_map(config) -> dict:
  """Paddle variable name -> (our parameter path, transform from the Paddle layout)."""
  h, heads = config.hidden_size, config.num_heads
  hd = h // heads
  table = {
      "word_embedding": (("text_embeddings", "word_embedding"), None),
      "pos_embedding": (("text_embeddings", "pos_embedding"), None),
      "pre_encoder_layer_norm_scale": (("text_embeddings", "layer_norm", "scale"), None),
      "pre_encoder_layer_norm_bias": (("text_embeddings", "layer_norm", "bias"), None),
      "image_emb.w_0": (("region_embeddings", "image_emb", "kernel"), None),
      "image_emb.b_0": (("region_embeddings", "image_emb", "bias"), None),
      "image_loc.w_0": (("region_embeddings", "image_loc", "kernel"), None),
      "image_loc.b_0": (("region_embeddings", "image_loc", "bias"), None),
      "v_pre_encoder_layer_norm_scale": (("region_embeddings", "layer_norm", "scale"), None),
      "v_pre_encoder_layer_norm_bias": (("region_embeddings", "layer_norm", "bias"), None),
      "pooled_fc_text.w_0": (("pooled_fc_text", "dense", "kernel"), None),
      "pooled_fc_text.b_0": (("pooled_fc_text", "dense", "bias"), None),
      "pooled_fc_image.w_0": (("pooled_fc_image", "dense", "kernel"), None),
      "pooled_fc_image.b_0": (("pooled_fc_image", "dense", "bias"), None),
      "mask_lm_trans_fc.w_0": (("lm_head", "mask_lm_trans_fc", "kernel"), None),
      "mask_lm_trans_fc.b_0": (("lm_head", "mask_lm_trans_fc", "bias"), None),
      "mask_lm_trans_layer_norm_scale": (("lm_head", "mask_lm_trans_layer_norm", "scale"), None),
      "mask_lm_trans_layer_norm_bias": (("lm_head", "mask_lm_trans_layer_norm", "bias"), None),
      "mask_lm_out_fc.b_0": (("lm_head", "mask_lm_out_bias"), None),
  }
  if not config.get("tie_lm_head", True):  # weight_sharing=False: the LM's own output kernel
    table["mask_lm_out_fc.w_0"] = (("lm_head", "mask_lm_out_kernel"), None)
  for name, size in (("role_embedding", "role_type_size"), ("turn_embedding", "turn_type_size")):
    if config.get(size, 0):  # task_type 'dialog' (CoQA)
      table[name] = (("text_embeddings", name), None)
  for i in range(config.num_layers):
    p, ours = f"encoder_layer_{i}_", ("encoder", f"layer_{i}")
    for name in ("query", "key", "value"):
      table[f"{p}multi_head_att_{name}_fc.w_0"] = (ours + ("attention", name, "kernel"),
                                                   lambda w: w.reshape(h, heads, hd))
      table[f"{p}multi_head_att_{name}_fc.b_0"] = (ours + ("attention", name, "bias"),
                                                   lambda b: b.reshape(heads, hd))
    table[f"{p}multi_head_att_output_fc.w_0"] = (ours + ("attention", "output", "kernel"),
                                                 lambda w: w.reshape(heads, hd, h))
    table[f"{p}multi_head_att_output_fc.b_0"] = (ours + ("attention", "output", "bias"), None)
    for norm in ("post_att_layer_norm", "post_ffn_layer_norm"):
      table[f"{p}{norm}_scale"] = (ours + (norm, "scale"), None)
      table[f"{p}{norm}_bias"] = (ours + (norm, "bias"), None)
    for fc in ("ffn_fc_0", "ffn_fc_1"):
      table[f"{p}{fc}.w_0"] = (ours + (fc, "kernel"), None)
      table[f"{p}{fc}.b_0"] = (ours + (fc, "bias"), None)
  return table


# Variables a released program may lack: the classifier / regression programs build the text
# encoder only (no image input, no LM head), a pretraining-only program no pooled heads. Their
# parameters start fresh and are reported so.
OPTIONAL_PREFIXES = ("pooled_fc_", "image_emb.", "image_loc.", "v_pre_encoder_", "mask_lm_")

# Task heads (src/finetune/*.py) -> our task head's parameters, for `--task`:
#   glue      classifier.py / regression.py  cls_out_{num_labels}_w / _b   -> cls_out
#   retrieval retrieval.py                   match_fc.w_0 / .b_0           -> match_fc
#   snli_ve   visual_entailment.py           cls_out_w_0 / _b_0, _w_1 / _b_1 -> cls_out_0, cls_out_1
TASK_HEADS = ("glue", "retrieval", "snli_ve")


def _files(directory) -> dict:
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"{directory}: expected a Paddle persistables directory")
  return {p.name: p for p in directory.iterdir() if p.is_file()}


def config_for_paddle_dir(directory, config):
  """The model config adjusted to what the directory holds: dialog role / turn tables (their
  sizes from the files) and an untied LM output kernel (mask_lm_out_fc.w_0)."""
  files = _files(directory)
  config = config.copy_and_resolve_references()
  for name, size in (("role_embedding", "role_type_size"), ("turn_embedding", "turn_type_size")):
    if name in files:
      config[size] = int(read_lod_tensor(files[name]).shape[0])
  if "mask_lm_out_fc.w_0" in files:
    config.tie_lm_head = False
  return config


def task_head_name_map(task: str, files) -> dict:
  """Paddle variable name -> our head parameter path for `task` (see TASK_HEADS)."""
  if task == "glue":
    names = sorted(n for n in files if n.startswith("cls_out_") and n.endswith("_w")
                   and n[len("cls_out_"):-2].isdigit())
    if len(names) != 1:
      raise ValueError(f"--task=glue: expected one cls_out_<labels>_w (UNIMO's classifier or "
                       f"regression head), found {names or 'none'}")
    stem = names[0][:-2]
    return {f"{stem}_w": ("cls_out", "kernel"), f"{stem}_b": ("cls_out", "bias")}
  if task == "retrieval":
    return {"match_fc.w_0": ("match_fc", "kernel"), "match_fc.b_0": ("match_fc", "bias")}
  if task == "snli_ve":
    return {"cls_out_w_0": ("cls_out_0", "kernel"), "cls_out_b_0": ("cls_out_0", "bias"),
            "cls_out_w_1": ("cls_out_1", "kernel"), "cls_out_b_1": ("cls_out_1", "bias")}
  raise ValueError(f"--task: expected one of {TASK_HEADS} (the tasks with a released head), "
                   f"found {task!r}")


def task_head_from_paddle_dir(directory, task: str) -> tuple:
  """(head params, converted names) of `task`'s head in a Paddle directory; a missing head
  variable is an error naming it."""
  files = _files(directory)
  table = task_head_name_map(task, files)
  missing = sorted(n for n in table if n not in files)
  if missing:
    raise ValueError(f"{directory}: --task={task} expects the head variables {sorted(table)}, "
                     f"missing {missing}")
  head = {}
  for name, (module, leaf) in table.items():
    head.setdefault(module, {})[leaf] = read_lod_tensor(files[name]).astype(np.float32)
  return head, sorted(table)


def params_from_paddle_dir(directory, config, rng=None):
  """(params, report) from a Paddle persistables directory of UNIMO variables.

  report = {'converted', 'unused' (files not mapped, e.g. optimizer moments or task heads),
  'fresh' (our parameters no file provides)}. A missing text-encoder variable or a shape that
  differs from the config raises an error naming it; image, pooled and LM-head variables are
  optional (a text-only program has none) and start fresh. `config` should come from
  config_for_paddle_dir (dialog tables, untied LM output).
  """
  directory = pathlib.Path(directory)
  files = _files(directory)
  table = unimo_name_map(config)
  required = [n for n in table if not n.startswith(OPTIONAL_PREFIXES)]
  missing = [n for n in required if n not in files]
  if missing:
    raise ValueError(f"{directory}: missing {len(missing)} UNIMO variables, e.g. {missing[:5]}; "
                     f"found {len(files)} files, e.g. {sorted(files)[:5]}")
  unrolled = config.copy_and_resolve_references()
  unrolled.scan_layers = False
  params = jax.tree.map(np.asarray, init_params(unrolled, jax.random.key(0) if rng is None else rng))
  converted = []
  for name, (path, transform) in table.items():
    if name not in files:
      continue
    value = read_lod_tensor(files[name]).astype(np.float32)
    node = params
    for key in path[:-1]:
      node = node[key]
    expected = tuple(node[path[-1]].shape)
    if transform is not None:
      if value.size != int(np.prod(expected)):
        raise ValueError(f"{files[name]}: expected {int(np.prod(expected))} values for "
                         f"params/{'/'.join(path)} {expected}, found shape {value.shape}")
      value = transform(value)
    if tuple(value.shape) != expected:
      raise ValueError(f"{files[name]}: expected shape {expected} for params/{'/'.join(path)} "
                       f"from the model config, found {tuple(value.shape)}")
    node[path[-1]] = value
    converted.append(name)
  filled = {"/".join(path) for name, (path, _) in table.items() if name in files}
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  fresh = sorted({"/".join(k.key for k in path) for path, _ in leaves} - filled)
  unused = sorted(set(files) - set(table))
  if config.scan_layers:
    params = stack_layers(params, config.num_layers)
  return params, {"converted": sorted(converted), "unused": unused, "fresh": fresh}


def config_from_unimo_file(path):
  return config_from_unimo(json.loads(pathlib.Path(path).read_text()))

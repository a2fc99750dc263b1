"""Detector weights from the public PyTorch ports of bottom-up-attention -> our parameter tree.

Two layouts, both detectron2-named (backbone.stem / backbone.res{2,3,4} / roi_heads.res5 with a
`.norm` batch norm after every conv):

  milvlg  MILVLG/bottom-up-attention.pytorch's converted Caffe weights
          (bua-caffe-frcn-r101-k10-100.pth, -k36.pth): the Caffe heads unchanged, background at
          class 0, a 2-way RPN softmax (objectness_logits: 2A channels), bbox_pred 1601 x 4,
          attributes in attr_linear1 / attr_linear2, the class embedding in cls_embed.
  hf      the LXMERT demo's unc-nlp/frcnn-vg-finetuned (pytorch_model.bin, from
          airsplay/py-bottom-up-attention): background LAST, one objectness logit per anchor,
          bbox_pred without the background's 4 columns, fc_attr / attr_score / cls_embedding,
          "no attribute" last.

Every conv's batch norm (eps 1e-5) is folded into the conv: kernel * gamma / sqrt(var + eps),
bias beta - mean * gamma / sqrt(var + eps). The hf heads are permuted to the Caffe order
(background first); its single RPN logit l becomes the pair (0, l), since softmax((0, l))[1] =
sigmoid(l). Anchors come from the checkpoint's anchor_generator.cell_anchors.0 when present,
else from the Caffe rule (detector/anchors.py). Running-count buffers (num_batches_tracked) are
ignored; any other name that is missing, left over or shaped otherwise is refused by name.
"""

import numpy as np

from unimo_jax.detector.anchors import base_anchors
from unimo_jax.detector.config import DetectorConfig

LAYOUTS = ("milvlg", "hf")
BN_EPS = 1e-5
ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"
_NORM = ("weight", "bias", "running_mean", "running_var")


def _trunk_convs(config: DetectorConfig):
  """(path in our tree, torch prefix, [out, in, kh, kw]) of every conv that has a batch norm."""
  yield ("trunk", "conv1"), "backbone.stem.conv1", (config.stem_width, 3, 7, 7)
  channels = config.stem_width
  for stage, count in zip((2, 3, 4, 5), config.blocks):
    inner, out = config.stage_widths(stage)
    root = ("res5",) if stage == 5 else ("trunk", f"res{stage}")
    prefix = "roi_heads.res5" if stage == 5 else f"backbone.res{stage}"
    for block in range(count):
      where = root + (str(block),)
      if block == 0:
        yield where + ("shortcut",), f"{prefix}.0.shortcut", (out, channels, 1, 1)
      yield where + ("conv1",), f"{prefix}.{block}.conv1", (inner, channels, 1, 1)
      yield where + ("conv2",), f"{prefix}.{block}.conv2", (inner, inner, 3, 3)
      yield where + ("conv3",), f"{prefix}.{block}.conv3", (out, inner, 1, 1)
      channels = out


def _head_shapes(config: DetectorConfig, layout: str) -> dict:
  c, a, d = config.num_classes, config.num_anchors, config.feature_dim
  c4 = config.stage_widths(4)[1]
  rpn = config.rpn_channels
  shapes = {"proposal_generator.rpn_head.conv.weight": (rpn, c4, 3, 3),
            "proposal_generator.rpn_head.conv.bias": (rpn,),
            "proposal_generator.rpn_head.anchor_deltas.weight": (4 * a, rpn, 1, 1),
            "proposal_generator.rpn_head.anchor_deltas.bias": (4 * a,)}
  head = "roi_heads.box_predictor"
  logits = 2 * a if layout == "milvlg" else a
  shapes.update({"proposal_generator.rpn_head.objectness_logits.weight": (logits, rpn, 1, 1),
                 "proposal_generator.rpn_head.objectness_logits.bias": (logits,),
                 f"{head}.cls_score.weight": (c, d), f"{head}.cls_score.bias": (c,)})
  boxes = c if layout == "milvlg" else c - 1
  shapes.update({f"{head}.bbox_pred.weight": (4 * boxes, d), f"{head}.bbox_pred.bias": (4 * boxes,)})
  embed, fc1, fc2 = (("cls_embed", "attr_linear1", "attr_linear2") if layout == "milvlg" else
                     ("cls_embedding", "fc_attr", "attr_score"))
  e, h, n = config.class_embedding, config.attribute_hidden, config.num_attributes
  shapes.update({f"{head}.{embed}.weight": (c, e), f"{head}.{fc1}.weight": (h, d + e),
                 f"{head}.{fc1}.bias": (h,), f"{head}.{fc2}.weight": (n, h),
                 f"{head}.{fc2}.bias": (n,)})
  return shapes


def expected_shapes(config: DetectorConfig, layout: str) -> dict:
  """{torch name: shape} of every tensor a checkpoint in `layout` holds (anchors optional)."""
  if layout not in LAYOUTS:
    raise ValueError(f"detector layout: expected one of {LAYOUTS}, found {layout!r}")
  shapes = {}
  for _, prefix, shape in _trunk_convs(config):
    shapes[f"{prefix}.weight"] = shape
    shapes.update({f"{prefix}.norm.{name}": (shape[0],) for name in _NORM})
  shapes.update(_head_shapes(config, layout))
  return shapes


def detect_layout(state: dict) -> str:
  if "roi_heads.box_predictor.attr_linear1.weight" in state:
    return "milvlg"
  if "roi_heads.box_predictor.fc_attr.weight" in state:
    return "hf"
  raise ValueError("detector checkpoint: expected the attribute head of MILVLG's .pth "
                   "(roi_heads.box_predictor.attr_linear1.weight) or of unc-nlp/frcnn-vg-"
                   "finetuned (roi_heads.box_predictor.fc_attr.weight); found neither among "
                   f"{len(state)} tensors (first: {sorted(state)[:3]})")


def _check_names(state: dict, expected: dict, layout: str) -> None:
  names = {k for k in state if not k.endswith("num_batches_tracked") and k != ANCHORS}
  missing = sorted(set(expected) - names)
  extra = sorted(names - set(expected))
  if missing or extra:
    raise ValueError(f"detector checkpoint ({layout} layout): "
                     + (f"missing {len(missing)} tensors, first {missing[:5]}" if missing else "")
                     + ("; " if missing and extra else "")
                     + (f"{len(extra)} unexpected tensors, first {extra[:5]}" if extra else ""))
  for name, shape in expected.items():
    found = tuple(np.shape(state[name]))
    if found != tuple(shape):
      raise ValueError(f"detector checkpoint ({layout} layout): {name} has shape {list(found)}, "
                       f"expected {list(shape)} for this detector config")
  num_anchors = expected["proposal_generator.rpn_head.anchor_deltas.bias"][0] // 4
  if ANCHORS in state and tuple(np.shape(state[ANCHORS])) != (num_anchors, 4):
    raise ValueError(f"detector checkpoint: {ANCHORS} has shape {list(np.shape(state[ANCHORS]))}, "
                     f"expected [{num_anchors}, 4]")


def _folded(state, prefix):
  weight = np.asarray(state[f"{prefix}.weight"], np.float64)
  gamma, beta, mean, var = (np.asarray(state[f"{prefix}.norm.{n}"], np.float64) for n in _NORM)
  scale = gamma / np.sqrt(var + BN_EPS)
  kernel = weight * scale[:, None, None, None]
  return {"kernel": _hwio(kernel), "bias": (beta - mean * scale).astype(np.float32)}


def _hwio(weight):
  return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0))).astype(np.float32)


def _conv(state, prefix):
  return {"kernel": _hwio(np.asarray(state[f"{prefix}.weight"])),
          "bias": np.asarray(state[f"{prefix}.bias"], np.float32)}


def _dense(weight, bias):
  return {"kernel": np.ascontiguousarray(np.asarray(weight, np.float32).T),
          "bias": np.asarray(bias, np.float32)}


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _last_first(array):
  """Moves the last row (hf's background / no-attribute class) to the front."""
  array = np.asarray(array)
  return np.concatenate([array[-1:], array[:-1]], axis=0)


def _heads(state, layout, config):
  head = "roi_heads.box_predictor"
  rpn = "proposal_generator.rpn_head"
  out = {"rpn": {"conv": _conv(state, f"{rpn}.conv"), "bbox": _conv(state, f"{rpn}.anchor_deltas")}}
  logits_w = np.asarray(state[f"{rpn}.objectness_logits.weight"], np.float32)
  logits_b = np.asarray(state[f"{rpn}.objectness_logits.bias"], np.float32)
  if layout == "hf":  # one logit per anchor -> (background 0, foreground l)
    logits_w = np.concatenate([np.zeros_like(logits_w), logits_w])
    logits_b = np.concatenate([np.zeros_like(logits_b), logits_b])
  out["rpn"]["cls"] = {"kernel": _hwio(logits_w), "bias": logits_b}
  cls_w, cls_b = state[f"{head}.cls_score.weight"], state[f"{head}.cls_score.bias"]
  box_w, box_b = state[f"{head}.bbox_pred.weight"], state[f"{head}.bbox_pred.bias"]
  if layout == "milvlg":
    embed = state[f"{head}.cls_embed.weight"]
    fc1 = (state[f"{head}.attr_linear1.weight"], state[f"{head}.attr_linear1.bias"])
    fc2 = (state[f"{head}.attr_linear2.weight"], state[f"{head}.attr_linear2.bias"])
  else:
    cls_w, cls_b = _last_first(cls_w), _last_first(cls_b)
    box_w = np.concatenate([np.zeros((4, np.shape(box_w)[1]), np.float32), box_w])
    box_b = np.concatenate([np.zeros(4, np.float32), box_b])
    embed = _last_first(state[f"{head}.cls_embedding.weight"])
    fc1 = (state[f"{head}.fc_attr.weight"], state[f"{head}.fc_attr.bias"])
    fc2 = (_last_first(state[f"{head}.attr_score.weight"]),
           _last_first(state[f"{head}.attr_score.bias"]))
  out.update(cls_score=_dense(cls_w, cls_b), bbox_pred=_dense(box_w, box_b),
             cls_embedding=np.asarray(embed, np.float32), fc_attr=_dense(*fc1),
             attr_score=_dense(*fc2))
  return out


def params_from_state_dict(state: dict, config: DetectorConfig, layout: str = "auto"):
  """(params, report) for detector/network.py from a port's state dict."""
  layout = detect_layout(state) if layout == "auto" else layout
  expected = expected_shapes(config, layout)
  _check_names(state, expected, layout)
  params = {}
  for path, prefix, _ in _trunk_convs(config):
    _set(params, path, _folded(state, prefix))
  params.update(_heads(state, layout, config))
  from_checkpoint = ANCHORS in state
  params["anchors"] = (np.asarray(state[ANCHORS], np.float32) if from_checkpoint else
                       base_anchors(config.feature_stride, config.anchor_ratios,
                                    config.anchor_scales))
  ignored = sorted(k for k in state if k.endswith("num_batches_tracked"))
  report = {"layout": layout, "converted": len(expected), "ignored": ignored,
            "anchors": "checkpoint" if from_checkpoint else "caffe rule"}
  return params, report


def random_state_dict(config: DetectorConfig, layout: str = "milvlg", seed: int = 0) -> dict:
  """A state dict of `layout` with random weights and batch-norm statistics, scaled so that
  activations stay O(1) through the 100+ layers (tests, benchmarks, compile reports)."""
  rng = np.random.default_rng(seed)
  state = {}
  for name, shape in expected_shapes(config, layout).items():
    if name.endswith("norm.running_var"):
      value = rng.uniform(0.5, 2.0, shape)
    elif name.endswith("norm.weight"):
      value = rng.uniform(0.5, 1.0, shape)
      if ".conv3." in name:  # keep residual sums from growing over 23 blocks
        value *= 0.2
    elif name.endswith(("norm.bias", "norm.running_mean")) or name.endswith(".bias"):
      value = rng.normal(0.0, 0.1, shape)
    else:
      fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
      if "anchor_deltas" in name or "bbox_pred" in name:  # proposals near their anchors
        value *= 0.05
    state[name] = value.astype(np.float32)
  return state

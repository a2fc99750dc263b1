"""An independent reference of the bottom-up-attention test-time detector, for parity tests.

Written from the original's files, not from unimo_jax.detector: torch for the network on a
detectron2-named state dict with unfolded batch norm (the MILVLG layout), numpy loops for the
rest, each following the Caffe code path it names:
  anchors      lib/rpn/generate_anchors.py (_whctrs / _mkanchors / _ratio_enum / _scale_enum)
  proposals    lib/rpn/proposal_layer.py + lib/fast_rcnn/bbox_transform.py
  nms          lib/nms/py_cpu_nms.py (suppress at IoU >= threshold, as cpu_nms.pyx)
  roi pooling  caffe/src/caffe/layers/roi_pooling_layer.cpp (per-bin loops)
  selection    tools/generate_tsv.py
The image runs at its own size (no padding), as the original does. Sorting is numpy's stable
sort by descending score so that ties have one defined order (the original's is unspecified).
"""

import numpy as np
import torch
import torch.nn.functional as F


# ---- anchors ---------------------------------------------------------------------------------

def _whctrs(anchor):
  w = anchor[2] - anchor[0] + 1
  h = anchor[3] - anchor[1] + 1
  return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws, hs, x_ctr, y_ctr):
  ws, hs = ws[:, None], hs[:, None]
  return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1),
                    x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(4, 8, 16, 32)):
  base = np.array([1, 1, base_size, base_size]) - 1
  w, h, x, y = _whctrs(base)
  size_ratios = w * h / np.array(ratios)
  ws = np.round(np.sqrt(size_ratios))
  hs = np.round(ws * np.array(ratios))
  ratio_anchors = _mkanchors(ws, hs, x, y)
  out = []
  for anchor in ratio_anchors:
    w, h, x, y = _whctrs(anchor)
    out.append(_mkanchors(w * np.array(scales), h * np.array(scales), x, y))
  return np.vstack(out)


# ---- boxes and nms ---------------------------------------------------------------------------

def bbox_transform_inv(boxes, deltas):
  widths = boxes[:, 2] - boxes[:, 0] + 1.0
  heights = boxes[:, 3] - boxes[:, 1] + 1.0
  ctr_x = boxes[:, 0] + 0.5 * widths
  ctr_y = boxes[:, 1] + 0.5 * heights
  pred_ctr_x = deltas[:, 0] * widths + ctr_x
  pred_ctr_y = deltas[:, 1] * heights + ctr_y
  pred_w = np.exp(deltas[:, 2]) * widths
  pred_h = np.exp(deltas[:, 3]) * heights
  return np.stack([pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                   pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h], axis=1)


def clip_boxes(boxes, height, width):
  out = boxes.copy()
  out[:, 0::2] = np.maximum(np.minimum(boxes[:, 0::2], width - 1), 0)
  out[:, 1::2] = np.maximum(np.minimum(boxes[:, 1::2], height - 1), 0)
  return out


def py_nms(boxes, scores, thresh):
  """Greedy NMS: indices kept, in keep order."""
  x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = np.argsort(-scores, kind="stable")
  keep = []
  while order.size > 0:
    i = order[0]
    keep.append(i)
    xx1 = np.maximum(x1[i], x1[order[1:]])
    yy1 = np.maximum(y1[i], y1[order[1:]])
    xx2 = np.minimum(x2[i], x2[order[1:]])
    yy2 = np.minimum(y2[i], y2[order[1:]])
    w = np.maximum(0.0, xx2 - xx1 + 1)
    h = np.maximum(0.0, yy2 - yy1 + 1)
    inter = w * h
    ovr = inter / (areas[i] + areas[order[1:]] - inter)
    order = order[1:][ovr < thresh]
  return np.array(keep, np.int64)


# ---- network (torch) -------------------------------------------------------------------------

def _t(state, name):
  return torch.from_numpy(np.asarray(state[name], np.float32))


def _conv_bn(x, state, prefix, stride=1, padding=0, dilation=1):
  y = F.conv2d(x, _t(state, f"{prefix}.weight"), stride=stride, padding=padding,
               dilation=dilation)
  return F.batch_norm(y, _t(state, f"{prefix}.norm.running_mean"),
                      _t(state, f"{prefix}.norm.running_var"), _t(state, f"{prefix}.norm.weight"),
                      _t(state, f"{prefix}.norm.bias"), training=False, eps=1e-5)


def _block(x, state, prefix, stride, dilation=1, first=False):
  shortcut = _conv_bn(x, state, f"{prefix}.shortcut", stride) if first else x
  y = F.relu(_conv_bn(x, state, f"{prefix}.conv1", stride))
  y = F.relu(_conv_bn(y, state, f"{prefix}.conv2", 1, dilation, dilation))
  y = _conv_bn(y, state, f"{prefix}.conv3")
  return F.relu(y + shortcut)


def c4(state, blob, blocks):
  """blob [1, 3, H, W] -> res4 [1, C, h, w]."""
  x = F.relu(_conv_bn(blob, state, "backbone.stem.conv1", 2, 3))
  x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
  for stage, count in zip((2, 3, 4), blocks[:3]):
    for b in range(count):
      x = _block(x, state, f"backbone.res{stage}.{b}", 2 if (b == 0 and stage > 2) else 1,
                 first=b == 0)
  return x


def res5(state, pooled, count):
  x = pooled
  for b in range(count):
    x = _block(x, state, f"roi_heads.res5.{b}", 1, dilation=2, first=b == 0)
  return x.mean(dim=(2, 3))


def rpn(state, feature, num_anchors):
  p = "proposal_generator.rpn_head"
  x = F.relu(F.conv2d(feature, _t(state, f"{p}.conv.weight"), _t(state, f"{p}.conv.bias"),
                      padding=1))
  scores = F.conv2d(x, _t(state, f"{p}.objectness_logits.weight"),
                    _t(state, f"{p}.objectness_logits.bias"))
  deltas = F.conv2d(x, _t(state, f"{p}.anchor_deltas.weight"), _t(state, f"{p}.anchor_deltas.bias"))
  _, _, h, w = scores.shape
  # rpn_cls_prob_reshape: (1, 2A, H, W) -> (1, 2, A*H, W), softmax over axis 1, back
  prob = F.softmax(scores.view(1, 2, num_anchors * h, w), dim=1).view(1, 2 * num_anchors, h, w)
  fg = prob[:, num_anchors:].numpy()[0]  # [A, h, w]
  fg = fg.transpose(1, 2, 0).reshape(-1)  # (h, w, A)
  deltas = deltas.numpy()[0].transpose(1, 2, 0).reshape(-1, 4)
  return fg, deltas, (h, w)


def roi_pool(feature, rois, pooled, scale):
  """feature [C, H, W] numpy, rois [R, 4] -> [R, C, P, P]."""
  channels, height, width = feature.shape
  out = np.zeros((len(rois), channels, pooled, pooled), np.float32)

  def c_round(v):
    return int(np.floor(v + 0.5)) if v >= 0 else -int(np.floor(-v + 0.5))

  for r, (x1, y1, x2, y2) in enumerate(rois):
    sw, sh = c_round(np.float32(x1) * np.float32(scale)), c_round(np.float32(y1) * np.float32(scale))
    ew, eh = c_round(np.float32(x2) * np.float32(scale)), c_round(np.float32(y2) * np.float32(scale))
    roi_w, roi_h = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
    bin_h, bin_w = np.float32(roi_h) / np.float32(pooled), np.float32(roi_w) / np.float32(pooled)
    for ph in range(pooled):
      hs = min(max(int(np.floor(np.float32(ph) * bin_h)) + sh, 0), height)
      he = min(max(int(np.ceil(np.float32(ph + 1) * bin_h)) + sh, 0), height)
      for pw in range(pooled):
        ws = min(max(int(np.floor(np.float32(pw) * bin_w)) + sw, 0), width)
        we = min(max(int(np.ceil(np.float32(pw + 1) * bin_w)) + sw, 0), width)
        if he > hs and we > ws:
          out[r, :, ph, pw] = feature[:, hs:he, ws:we].max(axis=(1, 2))
  return out


def heads(state, features):
  p = "roi_heads.box_predictor"
  scores = F.linear(features, _t(state, f"{p}.cls_score.weight"), _t(state, f"{p}.cls_score.bias"))
  deltas = F.linear(features, _t(state, f"{p}.bbox_pred.weight"), _t(state, f"{p}.bbox_pred.bias"))
  emb = _t(state, f"{p}.cls_embed.weight")[scores.argmax(dim=1)]
  hidden = F.relu(F.linear(torch.cat([features, emb], 1), _t(state, f"{p}.attr_linear1.weight"),
                           _t(state, f"{p}.attr_linear1.bias")))
  attr = F.linear(hidden, _t(state, f"{p}.attr_linear2.weight"), _t(state, f"{p}.attr_linear2.bias"))
  return F.softmax(scores, 1).numpy(), deltas.numpy(), F.softmax(attr, 1).numpy()


# ---- the whole detector ----------------------------------------------------------------------

def detect(state, config, blob_hwc, scale):
  """blob_hwc: the resized, mean-subtracted BGR image [h, w, 3] (unpadded); scale: the resize
  factor. Returns every stage as numpy."""
  blob = torch.from_numpy(np.ascontiguousarray(blob_hwc.transpose(2, 0, 1)[None]))
  height, width = blob_hwc.shape[:2]
  with torch.no_grad():
    feature = c4(state, blob, config.blocks)
    fg, deltas, (fh, fw) = rpn(state, feature, config.num_anchors)
    anchors = generate_anchors(config.feature_stride, config.anchor_ratios, config.anchor_scales)
    shift_x, shift_y = np.meshgrid(np.arange(fw) * config.feature_stride,
                                   np.arange(fh) * config.feature_stride)
    shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).T
    all_anchors = (anchors[None] + shifts[:, None]).reshape(-1, 4)
    proposals = clip_boxes(bbox_transform_inv(all_anchors, deltas), height, width)
    min_size = config.rpn_min_size * scale
    ws = proposals[:, 2] - proposals[:, 0] + 1
    hs = proposals[:, 3] - proposals[:, 1] + 1
    keep = np.where((ws >= min_size) & (hs >= min_size))[0]
    proposals, fg = proposals[keep], fg[keep]
    order = np.argsort(-fg, kind="stable")[:config.pre_nms_top_n]
    proposals, fg = proposals[order], fg[order]
    keep = py_nms(proposals, fg, config.rpn_nms)[:config.post_nms_top_n]
    rois = proposals[keep].astype(np.float32)
    pooled = roi_pool(feature.numpy()[0], rois, config.pooled_size, 1.0 / config.feature_stride)
    features = res5(state, torch.from_numpy(pooled), config.blocks[3])
    cls_prob, box_deltas, attr_prob = heads(state, features)
  boxes = rois / scale
  max_conf = np.zeros(len(rois), np.float32)
  for c in range(1, cls_prob.shape[1]):
    kept = py_nms(boxes, cls_prob[:, c], config.class_nms)
    max_conf[kept] = np.maximum(max_conf[kept], cls_prob[kept, c])
  selected = np.where(max_conf >= config.conf_thresh)[0]
  if len(selected) < config.min_boxes:
    selected = np.argsort(-max_conf, kind="stable")[:config.min_boxes]
  elif len(selected) > config.max_boxes:
    selected = np.argsort(-max_conf, kind="stable")[:config.max_boxes]
  return {"c4": feature.numpy()[0].transpose(1, 2, 0), "rois": rois, "roi_features":
          features.numpy(), "cls_prob": cls_prob, "attr_prob": attr_prob, "box_deltas": box_deltas,
          "confidence": max_conf, "selected": selected, "boxes": boxes[selected],
          "features": features.numpy()[selected], "class_probs": cls_prob[selected]}

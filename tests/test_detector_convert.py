"""Detector weights: every tensor of the two supported layouts maps by name and shape, the hf
layout's reordered heads give the same detections as the Caffe-ordered ones, bad checkpoints are
refused by name, and `python -m unimo_jax.convert detector` writes a checkpoint that loads."""

import json
import pickle
import zipfile

import jax
import numpy as np
import pytest

from tests.test_detector import TINY, _images
from unimo_jax.convert import __main__ as convert_main
from unimo_jax.convert.detector import (ANCHORS, expected_shapes, params_from_state_dict,
                                        random_state_dict)
from unimo_jax.convert.safe_pickle import UnsafePickleError
from unimo_jax.detector.config import DetectorConfig
from unimo_jax.detector.extractor import Extractor, load_detector

torch = pytest.importorskip("torch")


def test_the_released_checkpoints_names_and_shapes():
  """The full ResNet-101 detector: 104 convs with batch norm (5 tensors each), the RPN (6) and
  the box predictor (9), with the shapes butd_detector.md lists for each port."""
  milvlg = expected_shapes(DetectorConfig(), "milvlg")
  hf = expected_shapes(DetectorConfig(), "hf")
  assert len(milvlg) == len(hf) == 104 * 5 + 6 + 9
  for name, shape in {"backbone.stem.conv1.weight": (64, 3, 7, 7),
                      "backbone.res2.0.shortcut.weight": (256, 64, 1, 1),
                      "backbone.res3.0.conv1.weight": (128, 256, 1, 1),
                      "backbone.res4.22.conv3.weight": (1024, 256, 1, 1),
                      "backbone.res4.22.conv3.norm.running_var": (1024,),
                      "roi_heads.res5.0.shortcut.weight": (2048, 1024, 1, 1),
                      "roi_heads.res5.2.conv2.weight": (512, 512, 3, 3),
                      "proposal_generator.rpn_head.conv.weight": (512, 1024, 3, 3),
                      "proposal_generator.rpn_head.objectness_logits.weight": (24, 512, 1, 1),
                      "proposal_generator.rpn_head.anchor_deltas.weight": (48, 512, 1, 1),
                      "roi_heads.box_predictor.cls_score.weight": (1601, 2048),
                      "roi_heads.box_predictor.bbox_pred.weight": (6404, 2048),
                      "roi_heads.box_predictor.cls_embed.weight": (1601, 256),
                      "roi_heads.box_predictor.attr_linear1.weight": (512, 2304),
                      "roi_heads.box_predictor.attr_linear2.weight": (401, 512)}.items():
    assert milvlg[name] == shape, name
  assert hf["proposal_generator.rpn_head.objectness_logits.weight"] == (12, 512, 1, 1)
  assert hf["roi_heads.box_predictor.bbox_pred.weight"] == (6400, 2048)
  assert hf["roi_heads.box_predictor.fc_attr.weight"] == (512, 2304)
  assert hf["roi_heads.box_predictor.attr_score.weight"] == (401, 512)


def test_a_full_size_checkpoint_maps_completely():
  config = DetectorConfig()
  state = random_state_dict(config)
  state["backbone.res4.3.conv1.norm.num_batches_tracked"] = np.array(0)
  state[ANCHORS] = np.zeros((12, 4), np.float32)
  params, report = params_from_state_dict(state, config)
  assert report["layout"] == "milvlg" and report["converted"] == len(state) - 2
  assert report["anchors"] == "checkpoint" and not params["anchors"].any()
  assert params["trunk"]["res4"]["22"]["conv3"]["kernel"].shape == (1, 1, 256, 1024)
  assert params["res5"]["0"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
  assert params["cls_score"]["kernel"].shape == (2048, 1601)
  count = sum(np.size(a) for a in jax.tree.leaves(params))
  assert 60e6 < count < 70e6, count  # ResNet-101 C4 + res5 + heads: about 64M weights


def _as_hf(state):
  """The same detector in the hf layout: background and "no attribute" last, no background box
  regressor, one RPN logit per anchor (fg - bg of the 2-way softmax)."""
  head, rpn = "roi_heads.box_predictor", "proposal_generator.rpn_head"
  last = lambda a: np.concatenate([a[1:], a[:1]])
  out = {k: v for k, v in state.items() if not k.startswith((head, f"{rpn}.objectness"))}
  a = TINY.num_anchors
  for part in ("weight", "bias"):
    logits = state[f"{rpn}.objectness_logits.{part}"]
    out[f"{rpn}.objectness_logits.{part}"] = logits[a:] - logits[:a]
    out[f"{head}.cls_score.{part}"] = last(state[f"{head}.cls_score.{part}"])
    out[f"{head}.bbox_pred.{part}"] = state[f"{head}.bbox_pred.{part}"][4:]
    out[f"{head}.fc_attr.{part}"] = state[f"{head}.attr_linear1.{part}"]
    out[f"{head}.attr_score.{part}"] = last(state[f"{head}.attr_linear2.{part}"])
  out[f"{head}.cls_embedding.weight"] = last(state[f"{head}.cls_embed.weight"])
  return out


def test_hf_layout_gives_the_caffe_ordered_detections():
  state = random_state_dict(TINY, seed=3)
  state["roi_heads.box_predictor.cls_score.weight"] *= 3.0
  hf_params, report = params_from_state_dict(_as_hf(state), TINY)
  assert report["layout"] == "hf"
  milvlg_params, _ = params_from_state_dict(state, TINY)
  ours = Extractor(TINY, hf_params)(_images()[:2])
  reference = Extractor(TINY, milvlg_params)(_images()[:2])
  for a, b in zip(ours, reference):
    assert a["boxes"].shape == b["boxes"].shape
    for name in ("boxes", "region_features", "class_probs", "attr_probs"):
      np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_bad_checkpoints_are_refused_by_name():
  state = random_state_dict(TINY)
  renamed = dict(state)
  renamed["backbone.res3.0.conv9.weight"] = renamed.pop("backbone.res3.0.conv2.weight")
  with pytest.raises(ValueError, match=r"missing 1 tensors, first \['backbone.res3.0.conv2.weight"
                     r"'\]; 1 unexpected tensors, first \['backbone.res3.0.conv9.weight'\]"):
    params_from_state_dict(renamed, TINY)
  wrong = dict(state)
  wrong["roi_heads.res5.0.conv1.weight"] = np.zeros((7, 128, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"roi_heads.res5.0.conv1.weight has shape \[7, 128, 1, 1\], "
                     r"expected \[64, 128, 1, 1\]"):
    params_from_state_dict(wrong, TINY)
  wrong = dict(state)
  wrong[ANCHORS] = np.zeros((9, 4), np.float32)
  with pytest.raises(ValueError, match=r"cell_anchors.0 has shape \[9, 4\], expected \[12, 4\]"):
    params_from_state_dict(wrong, TINY)
  with pytest.raises(ValueError, match="found neither"):
    params_from_state_dict({"encoder.weight": np.zeros(3)}, TINY)


def _pth(state, path):
  torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
              "__author__": "test"}, path)


def test_convert_command_writes_a_loadable_checkpoint(tmp_path, capsys):
  state = random_state_dict(TINY, seed=4)
  _pth(state, tmp_path / "bua.pth")
  fields = {k: v for k, v in json.loads(TINY.to_json()).items()}
  (tmp_path / "tiny.json").write_text(json.dumps(fields))
  assert convert_main.main(["detector", f"--src={tmp_path / 'bua.pth'}",
                            f"--out={tmp_path / 'det'}",
                            f"--detector-config={tmp_path / 'tiny.json'}", "--boxes=6"]) == 0
  assert "of the milvlg layout" in capsys.readouterr().out
  config, params = load_detector(tmp_path / "det")
  assert config.min_boxes == config.max_boxes == 6
  direct, _ = params_from_state_dict(state, TINY)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(direct)):
    np.testing.assert_array_equal(a, b)
  regions = Extractor(config, params)(_images()[2:])
  assert regions[0]["region_features"].shape == (6, TINY.feature_dim)
  assert json.loads((tmp_path / "det" / "report.json").read_text())["anchors"] == "caffe rule"


def test_a_malicious_pth_is_refused_and_nothing_runs(tmp_path, capsys):
  marker = tmp_path / "ran"

  class RunsCode:
    def __reduce__(self):
      import os
      return os.system, (f"touch {marker}",)

  with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"model": {"w": RunsCode()}}))
  assert convert_main.main(["detector", f"--src={tmp_path / 'evil.pth'}",
                            f"--out={tmp_path / 'det'}"]) == 2
  assert "system" in capsys.readouterr().err
  assert not marker.exists() and not (tmp_path / "det" / "params").exists()
  with pytest.raises(UnsafePickleError):
    from unimo_jax.convert.safe_pickle import load_torch_zip
    load_torch_zip(tmp_path / "evil.pth", nested_key="model")

"""Released-UNIMO (Paddle 1.x LoDTensor) import, read with numpy only."""

import json
import struct

import jax
import numpy as np
import pytest

from unimo_jax.convert.paddle import (PaddleFormatError, config_from_unimo, params_from_paddle_dir,
                                      read_lod_tensor, unimo_name_map)
from unimo_jax.model import Unimo, init_params

DTYPE_ENUM = {np.dtype(np.float32): 5, np.dtype(np.float16): 4, np.dtype(np.int64): 3}


def _varint(value):
  value &= (1 << 64) - 1
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def lod_tensor_bytes(array, lod=(), packed_dims=False):
  """Paddle 1.x SerializeToStream layout, written out by hand."""
  array = np.asarray(array)
  desc = b"\x08" + _varint(DTYPE_ENUM[array.dtype])  # field 1 (data_type), varint
  if packed_dims:
    dims = b"".join(_varint(d) for d in array.shape)
    desc += b"\x12" + _varint(len(dims)) + dims  # field 2, length-delimited
  else:
    desc += b"".join(b"\x10" + _varint(d) for d in array.shape)  # field 2, one varint each
  out = struct.pack("<I", 0) + struct.pack("<Q", len(lod))
  for level in lod:
    raw = np.asarray(level, np.uint64).tobytes()
    out += struct.pack("<Q", len(raw)) + raw
  out += struct.pack("<I", 0) + struct.pack("<i", len(desc)) + desc
  return out + array.astype(array.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64])
@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_lod_tensor_files_read_back_exactly(tmp_path, dtype, shape):
  rng = np.random.default_rng(0)
  array = (rng.normal(size=shape) * 100).astype(dtype)
  for i, (lod, packed) in enumerate((((), False), (([0, 2, 3],), True))):
    (tmp_path / f"v{i}").write_bytes(lod_tensor_bytes(array, lod, packed))
    got = read_lod_tensor(tmp_path / f"v{i}")
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


def test_truncated_and_malformed_files_are_named(tmp_path):
  data = lod_tensor_bytes(np.ones((4, 4), np.float32))
  (tmp_path / "cut").write_bytes(data[:-5])
  with pytest.raises(PaddleFormatError, match=r"cut: truncated: expected 64 bytes of 16 float32"):
    read_lod_tensor(tmp_path / "cut")
  (tmp_path / "head").write_bytes(data[:6])
  with pytest.raises(PaddleFormatError, match=r"head: truncated.*LoD level count"):
    read_lod_tensor(tmp_path / "head")
  (tmp_path / "version").write_bytes(struct.pack("<I", 3) + data[4:])
  with pytest.raises(PaddleFormatError, match=r"version: expected LoDTensor version 0, found 3"):
    read_lod_tensor(tmp_path / "version")


def _unimo_config(tmp_path):
  unimo = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "vocab_size": 50,
           "max_position_embeddings": 40, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
           "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
           "image_embedding_size": 12, "image_class_size": 9}
  (tmp_path / "unimo_tiny_en.json").write_text(json.dumps(unimo))
  return config_from_unimo(unimo)


def _write_paddle_dir(directory, params, config):
  """Every UNIMO variable of `params` in Paddle's names and [in, out] layout."""
  directory.mkdir()
  h = config.hidden_size
  for name, (path, transform) in unimo_name_map(config).items():
    value = params
    for key in path:
      value = value[key]
    value = np.asarray(value, np.float32)
    if transform is not None:  # attention kernels / biases back to Paddle's 2-D / 1-D layout
      value = value.reshape(h, h) if value.ndim == 3 else value.reshape(-1)
    (directory / name).write_bytes(lod_tensor_bytes(value))
  (directory / "encoder_layer_0_ffn_fc_0.w_0_moment1_0").write_bytes(
      lod_tensor_bytes(np.zeros((h, 4 * h), np.float32)))  # an optimizer variable


@pytest.mark.parametrize("scan_layers", [False, True])
def test_paddle_directory_converts_to_the_same_model(tmp_path, scan_layers):
  config = _unimo_config(tmp_path)
  assert (config.num_layers, config.mlp_dim, config.region_feature_dim,
          config.num_region_classes) == (2, 128, 12, 9)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: np.asarray(x) + rng.normal(size=np.shape(x)).astype(np.float32)
                        * 0.05, init_params(config, jax.random.key(3)))
  _write_paddle_dir(tmp_path / "unimo", params, config)
  config.scan_layers = scan_layers
  converted, report = params_from_paddle_dir(tmp_path / "unimo", config)
  assert report["unused"] == ["encoder_layer_0_ffn_fc_0.w_0_moment1_0"]
  assert all(name.startswith(("region_heads", "temperature", "image_projection",
                              "text_projection")) for name in report["fresh"]), report["fresh"]
  batch = {"input_ids": rng.integers(3, 50, size=(2, 9)).astype(np.int32),
           "region_features": rng.normal(size=(2, 3, 12)).astype(np.float32),
           "region_locations": rng.uniform(size=(2, 3, 5)).astype(np.float32),
           "region_mask": np.array([[1, 1, 0], [1, 1, 1]], bool)}
  direct_config = config.copy_and_resolve_references()
  direct_config.scan_layers = False
  want = Unimo(direct_config).apply({"params": params}, batch, heads={"lm"})
  got = Unimo(config).apply({"params": converted}, batch, heads={"lm"})
  for key in ("hidden", "pooled_text", "pooled_image", "lm_logits"):
    np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)


def test_missing_and_misshaped_variables_are_named(tmp_path):
  config = _unimo_config(tmp_path)
  params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
  _write_paddle_dir(tmp_path / "unimo", params, config)
  (tmp_path / "unimo" / "encoder_layer_1_ffn_fc_1.b_0").unlink()
  with pytest.raises(ValueError, match=r"missing 1 UNIMO variables.*encoder_layer_1_ffn_fc_1\.b_0"):
    params_from_paddle_dir(tmp_path / "unimo", config)
  (tmp_path / "unimo" / "encoder_layer_1_ffn_fc_1.b_0").write_bytes(
      lod_tensor_bytes(np.zeros(31, np.float32)))
  with pytest.raises(ValueError, match=r"ffn_fc_1\.b_0: expected shape \(32,\).*found \(31,\)"):
    params_from_paddle_dir(tmp_path / "unimo", config)


def test_convert_paddle_command(tmp_path):
  from unimo_jax.convert.__main__ import main
  from unimo_jax.model.params import abstract_params, strip_boxes
  from unimo_jax.train.checkpoint import restore_params
  config = _unimo_config(tmp_path)
  params = jax.tree.map(np.asarray, init_params(config, jax.random.key(2)))
  _write_paddle_dir(tmp_path / "unimo", params, config)
  (tmp_path / "dict").mkdir()
  for name in ("bpe/encoder.json", "bpe/vocab.bpe", "bpe/vocab.txt"):
    (tmp_path / "dict" / name.replace("bpe/", "roberta_base_en.")).write_text("{}")
  args = ["paddle", f"--src={tmp_path / 'unimo'}", f"--out={tmp_path / 'out'}",
          f"--model-config={tmp_path / 'unimo_tiny_en.json'}", f"--dict={tmp_path / 'dict'}"]
  assert main(args) == 0
  abstract = strip_boxes(abstract_params(config))
  single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  loaded = restore_params(tmp_path / "out" / "params", abstract, jax.tree.map(lambda _: single, abstract))
  np.testing.assert_array_equal(loaded["encoder"]["layer_1"]["attention"]["output"]["kernel"],
                                params["encoder"]["layer_1"]["attention"]["output"]["kernel"])
  assert sorted(p.name for p in (tmp_path / "out" / "tokenizer").iterdir()) == [
      "roberta_base_en.encoder.json", "roberta_base_en.vocab.bpe", "roberta_base_en.vocab.txt"]
  assert json.loads((tmp_path / "out" / "model_config.json").read_text())["num_layers"] == 2
  with pytest.raises(SystemExit, match="exists"):
    main(args)


def test_check_command_reports_the_converted_model(tmp_path, capsys):
  """The check statistics follow the checkpoint: its LM bias decides the top prediction."""
  from unimo_jax.convert.__main__ import main
  from unimo_jax.convert.check import DEFAULT_CAPTION, statistics
  from unimo_jax.data.synthetic.scene_dataset import write_synthetic
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  write_synthetic(tmp_path / "syn", pairs=40, eval_pairs=4, images=8, texts=40, feature_dim=12,
                  log=lambda *_: None)
  tok = load_tokenizer(tmp_path / "syn" / "tokenizer.model")
  config = _unimo_config(tmp_path)
  config.vocab_size = tok.vocab_size
  params = jax.tree.map(np.array, init_params(config, jax.random.key(2)))  # writable copies
  favourite = tok.encode("circle")[0]
  params["lm_head"]["mask_lm_out_bias"][favourite] = 50.0
  _write_paddle_dir(tmp_path / "unimo", params, config)
  unimo = json.loads((tmp_path / "unimo_tiny_en.json").read_text())
  (tmp_path / "unimo_tiny_en.json").write_text(json.dumps(dict(unimo, vocab_size=tok.vocab_size)))
  assert main(["paddle", f"--src={tmp_path / 'unimo'}", f"--out={tmp_path / 'out'}",
               f"--model-config={tmp_path / 'unimo_tiny_en.json'}"]) == 0
  assert main(["check", f"--params={tmp_path / 'out' / 'params'}", f"--tokenizer={tmp_path / 'syn' / 'tokenizer.model'}",
               f"--config={tmp_path / 'out' / 'model_config.json'}", "--caption=a large [MASK] circle",
               f"--save={tmp_path / 'check.npz'}"]) == 0
  printed = capsys.readouterr().out
  assert "[pair] top [MASK] predictions: 'circle'" in printed
  saved = np.load(tmp_path / "check.npz")
  direct = statistics(params, config, tok, "a large [MASK] circle")
  np.testing.assert_allclose(saved["pair_layer_norms"], direct["pair"]["layer_norms"], rtol=1e-5)
  assert saved["input_region_features"].shape == (1, 10, 12)
  assert int(saved["input_mask_index"]) == 3
  with pytest.raises(ValueError, match="exactly one \\[MASK\\]"):
    statistics(params, config, tok, DEFAULT_CAPTION.replace("[MASK]", "dog"))


def test_convert_paddle_command_reports_bad_input(tmp_path, capsys):
  from unimo_jax.convert.__main__ import main
  _unimo_config(tmp_path)
  (tmp_path / "unimo").mkdir()
  (tmp_path / "unimo" / "word_embedding").write_bytes(b"\x00\x00")
  code = main(["paddle", f"--src={tmp_path / 'unimo'}", f"--out={tmp_path / 'out'}",
               f"--model-config={tmp_path / 'unimo_tiny_en.json'}"])
  assert code == 2
  assert "missing" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_convert_paddle_checks_the_dict_before_writing(tmp_path):
  from unimo_jax.convert.__main__ import main
  config = _unimo_config(tmp_path)
  _write_paddle_dir(tmp_path / "unimo", jax.tree.map(np.asarray, init_params(config, jax.random.key(0))),
                    config)
  (tmp_path / "dict").mkdir()
  with pytest.raises(SystemExit, match="expected UNIMO dict files"):
    main(["paddle", f"--src={tmp_path / 'unimo'}", f"--out={tmp_path / 'out'}",
          f"--model-config={tmp_path / 'unimo_tiny_en.json'}", f"--dict={tmp_path / 'dict'}"])
  assert not (tmp_path / "out").exists()


# The classifier / regression program creates the text encoder, pooled_fc_text and its head only.
TEXT_ONLY_SKIP = ("image_emb.", "image_loc.", "v_pre_encoder_", "mask_lm_", "pooled_fc_image")
HEADS = {  # task -> (Paddle head variables {name: shape}, numpy head on pooled text / image)
    "glue": ({"cls_out_3_w": (32, 3), "cls_out_3_b": (3,)},
             lambda w, t, i: t @ w["cls_out_3_w"] + w["cls_out_3_b"]),
    "retrieval": ({"match_fc.w_0": (32, 1), "match_fc.b_0": (1,)},
                  lambda w, t, i: ((t * i) @ w["match_fc.w_0"] + w["match_fc.b_0"])[:, 0]),
    "snli_ve": ({"cls_out_w_0": (32, 2048), "cls_out_b_0": (2048,), "cls_out_w_1": (2048, 3),
                 "cls_out_b_1": (3,)},
                lambda w, t, i: ((t + i) @ w["cls_out_w_0"] + w["cls_out_b_0"]) @ w["cls_out_w_1"]
                + w["cls_out_b_1"]),
}


@pytest.mark.parametrize("task", sorted(HEADS))
def test_fine_tuned_programs_convert_with_their_heads(task, tmp_path):
  """A fine-tuned program's directory (GLUE's text-only) converts with --task: the image / LM
  variables it lacks are reported fresh, its head maps into our task head, and the task's
  forward on the converted {backbone, head} equals the original head (written out in numpy) on
  the converted encoder's pooled outputs."""
  from unimo_jax.convert.__main__ import main
  from unimo_jax.data.formats.tokenizers import ShapeOnlyTokenizer
  from unimo_jax.model.params import strip_boxes
  from unimo_jax.tasks.registry import make_task
  from unimo_jax.train.checkpoint import restore_params, stored_param_keys
  from train_helpers import config_from_file
  config = _unimo_config(tmp_path)
  rng = np.random.default_rng(4)
  params = jax.tree.map(lambda x: np.asarray(x) + rng.normal(size=np.shape(x)).astype(np.float32)
                        * 0.05, init_params(config, jax.random.key(5)))
  _write_paddle_dir(tmp_path / "unimo", params, config)
  if task == "glue":
    for f in (tmp_path / "unimo").iterdir():
      if f.name.startswith(TEXT_ONLY_SKIP):
        f.unlink()
  head_shapes, reference_head = HEADS[task]
  weights = {n: rng.normal(size=s).astype(np.float32) * 0.1 for n, s in head_shapes.items()}
  for name, value in weights.items():
    (tmp_path / "unimo" / name).write_bytes(lod_tensor_bytes(value))
  out = tmp_path / "out"
  assert main(["paddle", f"--src={tmp_path / 'unimo'}", f"--out={out}", f"--task={task}",
               f"--model-config={tmp_path / 'unimo_tiny_en.json'}"]) == 0
  report = json.loads((out / "report.json").read_text())
  assert report["head"] == sorted(weights) and not set(weights) & set(report["unused"])
  if task == "glue":
    assert any(f.startswith("region_embeddings/") for f in report["fresh"])
    assert any(f.startswith("lm_head/") for f in report["fresh"])
  assert stored_param_keys(out / "params") == {"backbone", "head"}

  c = config_from_file(task, "tiny")
  for key, value in config.items():
    c.model[key] = value
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  if task == "glue":
    c.task.labels = ("a", "b", "c")
  if task == "snli_ve":
    c.task.head_hidden = 2048
  t = make_task(c, tmp_path / "run", data_paths={}, tokenizer=ShapeOnlyTokenizer(50))
  abstract = strip_boxes(jax.eval_shape(t.boxed_params, jax.random.key(0)))
  single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  loaded = restore_params(out / "params", abstract, jax.tree.map(lambda _: single, abstract))
  batch = {"input_ids": rng.integers(3, 50, size=(2, 7)).astype(np.int32)}
  if task != "glue":
    batch.update({"region_features": rng.normal(size=(2, 3, 12)).astype(np.float32),
                  "region_locations": rng.uniform(size=(2, 3, 5)).astype(np.float32),
                  "region_mask": np.array([[1, 1, 0], [1, 1, 1]], bool)})
  outputs, got = t.forward(loaded, batch)
  want = reference_head(weights, np.asarray(outputs["pooled_text"], np.float64),
                        np.asarray(outputs.get("pooled_image", 0.0), np.float64))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
  # and the backbone is the written encoder: its embeddings are the file's
  np.testing.assert_array_equal(loaded["backbone"]["text_embeddings"]["word_embedding"],
                                params["text_embeddings"]["word_embedding"])


def test_dialog_tables_and_an_untied_lm_output_convert(tmp_path):
  from unimo_jax.convert.paddle import config_for_paddle_dir
  config = _unimo_config(tmp_path)
  params = jax.tree.map(np.asarray, init_params(config, jax.random.key(6)))
  _write_paddle_dir(tmp_path / "unimo", params, config)
  rng = np.random.default_rng(7)
  extra = {"role_embedding": rng.normal(size=(3, 32)), "turn_embedding": rng.normal(size=(16, 32)),
           "mask_lm_out_fc.w_0": rng.normal(size=(32, 50))}
  for name, value in extra.items():
    (tmp_path / "unimo" / name).write_bytes(lod_tensor_bytes(value.astype(np.float32)))
  adjusted = config_for_paddle_dir(tmp_path / "unimo", config)
  assert (adjusted.role_type_size, adjusted.turn_type_size, adjusted.tie_lm_head) == (3, 16, False)
  converted, report = params_from_paddle_dir(tmp_path / "unimo", adjusted)
  assert not set(extra) & set(report["unused"])
  np.testing.assert_allclose(converted["text_embeddings"]["turn_embedding"],
                             extra["turn_embedding"], rtol=1e-6)
  # the untied output: logits = transformed hidden . W + bias, W from mask_lm_out_fc.w_0
  batch = {"input_ids": rng.integers(3, 50, size=(1, 5)).astype(np.int32),
           "role_ids": np.array([[2, 2, 1, 1, 0]], np.int32),
           "turn_ids": np.array([[0, 0, 3, 3, 0]], np.int32)}
  out = Unimo(adjusted).apply({"params": converted}, batch, heads={"lm"})
  plain = Unimo(config).apply({"params": params}, {"input_ids": batch["input_ids"]}, heads={"lm"})
  assert not np.allclose(out["hidden"], plain["hidden"], atol=1e-3)  # role / turn ids count
  np.testing.assert_allclose(converted["lm_head"]["mask_lm_out_kernel"], extra["mask_lm_out_fc.w_0"],
                             rtol=1e-6)
  # with W = E^T the untied output gives the tied model's logits
  tied_again = jax.tree.map(np.asarray, converted)
  tied_again["lm_head"]["mask_lm_out_kernel"] = converted["text_embeddings"]["word_embedding"].T
  untied = Unimo(adjusted).apply({"params": tied_again}, batch, heads={"lm"})
  tied_config = adjusted.copy_and_resolve_references()
  tied_config.tie_lm_head = True
  tied_params = jax.tree.map(np.asarray, tied_again)
  del tied_params["lm_head"]["mask_lm_out_kernel"]
  tied = Unimo(tied_config).apply({"params": tied_params}, batch, heads={"lm"})
  np.testing.assert_allclose(untied["lm_logits"], tied["lm_logits"], rtol=1e-5, atol=1e-5)

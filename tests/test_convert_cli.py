"""python -m unimo_jax.convert: RoBERTa in (torch-free .bin reading), HF RoBERTa out."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_convert_roberta_command_writes_an_init_checkpoint(tmp_path):
  from test_convert_roberta import _random_padded_ids, _tiny_roberta, _torch_logits
  from unimo_jax.convert.__main__ import main
  from unimo_jax.convert.roberta import config_from_roberta
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  from unimo_jax.model import Unimo
  from unimo_jax.model.params import abstract_params, strip_boxes
  from unimo_jax.train.checkpoint import restore_params
  cfg, model = _tiny_roberta(seed=5)
  src = tmp_path / "roberta"
  cfg.save_pretrained(src)  # config.json
  torch.save(model.state_dict(), src / "pytorch_model.bin")  # tied weights share one storage
  vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5, "b": 6, "ab": 7}
  (src / "vocab.json").write_text(json.dumps(vocab))
  (src / "merges.txt").write_text("#version: 0.2\na b\n")
  assert main(["roberta", f"--src={src}", f"--out={tmp_path / 'out'}"]) == 0
  config = config_from_roberta(cfg.to_dict())
  abstract = strip_boxes(abstract_params(config))
  shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), abstract)
  params = restore_params(tmp_path / "out" / "params", abstract, shardings)
  ids, valid = _random_padded_ids(cfg.vocab_size, np.random.default_rng(2))
  ours = np.asarray(Unimo(config).apply({"params": params}, {"input_ids": ids.astype(np.int32)},
                                        heads={"lm"})["lm_logits"])
  assert np.abs(ours[valid] - _torch_logits(model, ids)[valid]).max() < 1e-4
  assert load_tokenizer(tmp_path / "out" / "tokenizer").vocab_size == len(vocab)
  report = json.loads((tmp_path / "out" / "report.json").read_text())
  assert report["unused"] == [] and "lm_head" not in report["fresh"]
  with pytest.raises(SystemExit, match="exists"):  # never overwrites a conversion
    main(["roberta", f"--src={src}", f"--out={tmp_path / 'out'}"])
  # ... and the command line exports it back to transformers, which reproduces the model.
  assert main(["export-roberta", f"--params={tmp_path / 'out' / 'params'}",
               f"--config={tmp_path / 'out' / 'model_config.json'}", f"--out={tmp_path / 'hf'}"]) == 0
  loaded = transformers.RobertaForMaskedLM.from_pretrained(tmp_path / "hf").eval()
  np.testing.assert_allclose(_torch_logits(loaded, ids)[valid], _torch_logits(model, ids)[valid],
                             atol=1e-5)


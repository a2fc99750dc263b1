"""The shipped recipes hold every hyper-parameter of UNIMO's per-dataset scripts: the table below
is transcribed from PaddlePaddle/Research NLP/UNIMO/script/*/model_conf (and the run.sh defaults
where a model_conf is silent), independently of unimo_jax/tasks/recipes.py."""

import pytest

from train_helpers import config_from_file

# dataset: (config file, {size: {script value name: value}}); batch = per-GPU BATCH_SIZE, gpus
# from run.sh's --nproc_per_node
GLUE = dict(lr=1e-5, epochs=10, batch=16, gpus=1, warmup=0.06, wd=0.0, max_len=512, b2=0.98)
TABLE = {
    ("cola", "base"): dict(GLUE, init="unimo_base_en", labels=2),
    ("cola", "large"): dict(GLUE, init="unimo_large_en", labels=2),
    ("sst2", "base"): dict(GLUE, init="unimo_base_en", labels=2),
    ("sst2", "large"): dict(GLUE, init="unimo_large_en", labels=2),
    ("mnli", "base"): dict(GLUE, init="unimo_base_en", labels=3),
    ("mnli", "large"): dict(GLUE, init="unimo_large_en", labels=3),
    ("stsb", "base"): dict(GLUE, init="unimo_mnli_base_en", labels=0),
    ("stsb", "large"): dict(GLUE, init="unimo_mnli_large_en", labels=0),
    ("caption", "base"): dict(lr=7e-6, epochs=20, batch=4, gpus=16, warmup=0.06, wd=0.01,
                              smooth=0.1, beam=5, penalty=0.6, min_out=5, max_out=50,
                              trigram=False, max_tgt=50, max_obj=100, max_img=101, seed=666,
                              adv_steps=4, adv_lr=0.03, adv_init=0.4, adv_max_norm=0.0,
                              adv_kl=1.0, init="unimo_base_en", b2=0.98),
    ("caption", "large"): dict(lr=7e-6, epochs=10, batch=2, gpus=16, warmup=0.06, wd=0.01,
                               smooth=0.1, beam=5, penalty=0.6, min_out=5, max_out=50,
                               trigram=False, max_tgt=50, max_obj=100, max_img=101, seed=666,
                               adv_steps=4, adv_lr=0.05, adv_init=0.4, adv_max_norm=0.4,
                               adv_kl=1.0, init="unimo_large_en", b2=0.98),
    ("retrieval", "base"): dict(lr=5e-6, epochs=40, batch=4, gpus=8, wd=0.1, samples=20,
                                decay=(24, 32), scale=0.1, max_img=101, seed=1,
                                init="unimo_base_en", b2=0.98),
    ("retrieval", "large"): dict(lr=5e-6, epochs=40, batch=2, gpus=8, wd=0.1, samples=20,
                                 decay=(24, 32), scale=0.1, max_img=101, seed=1,
                                 init="unimo_large_en", b2=0.98),
    ("snli_ve", "base"): dict(lr=1e-5, epochs=10, batch=12, gpus=16, warmup=0.06, wd=0.0,
                              max_img=101, adv_steps=4, adv_lr=0.05, adv_init=0.4,
                              adv_max_norm=0.4, adv_kl=1.0, init="unimo_base_en", b2=0.999),
    ("snli_ve", "large"): dict(lr=1e-5, epochs=10, batch=4, gpus=16, warmup=0.06, wd=0.0,
                               max_img=101, adv_steps=4, adv_lr=0.05, adv_init=0.4,
                               adv_max_norm=0.4, adv_kl=1.0, init="unimo_large_en", b2=0.999),
}
SEQ2SEQ = {  # max_src, max_tgt, max_out, min_out, beam, penalty, trigram, epoch, batch, lr
    ("cnndm", "base"): (512, 128, 128, 20, 5, 0.6, True, 20, 8, 4e-5),
    ("cnndm", "large"): (512, 128, 128, 20, 6, 1.2, True, 20, 8, 2e-5),
    ("gigaword", "base"): (128, 32, 32, 5, 5, 0.6, False, 10, 32, 3e-5),
    ("gigaword", "large"): (128, 32, 32, 5, 6, 1.2, False, 10, 32, 3e-5),
    ("squad_qg", "base"): (416, 96, 48, 5, 5, 1.0, False, 20, 8, 1.25e-5),
    ("squad_qg", "large"): (416, 96, 48, 5, 6, 1.2, False, 20, 8, 5e-6),
    ("coqa", "base"): (480, 32, 30, 0, 3, 0.0, False, 20, 8, 1e-5),
    ("coqa", "large"): (480, 32, 30, 0, 3, 0.0, False, 20, 8, 8e-6),
}
for (name, size), (src, tgt, out, mn, beam, lp, tri, ep, bs, lr) in SEQ2SEQ.items():
  TABLE[(name, size)] = dict(max_src=src, max_tgt=tgt, max_out=out, min_out=mn, beam=beam,
                             penalty=lp, trigram=tri, epochs=ep, batch=bs, gpus=4, lr=lr,
                             warmup=0.06, wd=0.01, smooth=0.1, init=f"unimo_{size}_en", b2=0.98,
                             seed=666 if name in ("squad_qg", "coqa") else 1)

FIELDS = {  # script value -> (config field, conversion)
    "lr": "optimizer.learning_rate", "epochs": "epochs", "warmup": "optimizer.warmup_proportion",
    "wd": "optimizer.weight_decay", "smooth": "task.label_smoothing", "beam": "decode.beam_size",
    "penalty": "decode.alpha", "min_out": "decode.min_length", "max_out": "decode.max_length",
    "trigram": "decode.trigram_blocking", "max_src": "data.max_source_length",
    "max_tgt": "data.max_target_length", "max_obj": "data.max_tags", "seed": "seed",
    "adv_steps": "task.adversarial.steps", "adv_lr": "task.adversarial.lr",
    "adv_init": "task.adversarial.init_mag", "adv_max_norm": "task.adversarial.max_norm",
    "adv_kl": "task.adversarial.kl_weight", "b2": "optimizer.b2",
    "max_len": "data.max_text_length", "scale": "optimizer.decay_factor",
    "decay": "optimizer.decay_epochs", "init": "recipe.init_checkpoint",
}


def field(config, dotted):
  for name in dotted.split("."):
    config = config[name]
  return config


@pytest.mark.parametrize("name,size", sorted(TABLE))
def test_recipe_holds_the_original_script_values(name, size):
  expected = TABLE[(name, size)]
  c = config_from_file(name, size)
  assert c.preset == size and c.model.name == size
  for key, value in expected.items():
    if key in FIELDS:
      dotted = "data.max_caption_length" if (name, key) == ("caption", "max_tgt") else FIELDS[key]
      got = field(c, dotted)
      assert (tuple(got) if isinstance(value, tuple) else got) == value, (key, got, value)
  assert c.batch_size == expected["batch"] * expected["gpus"]
  assert c.optimizer.b1 == 0.9 and c.optimizer.eps == 1e-6 and c.optimizer.grad_clip_norm == 1.0
  assert c.model.dropout_rate == 0.1
  script = name if name not in ("caption", "retrieval", "snli_ve") else None
  if script:
    assert c.recipe.source.endswith(("_large/model_conf" if size == "large" else "/model_conf"))
  if "max_img" in expected:
    assert c.data.max_regions + 1 == expected["max_img"]  # [IMG] + boxes
  if "adv_steps" in expected:
    assert c.task.adversarial.type == "villa" and c.task.adversarial.norm_type == "l2"
  if "samples" in expected:  # 10 image + 10 caption negatives from the training set
    assert 2 * c.task.negatives == expected["samples"]
    assert c.task.negative_source == "train_set" and c.optimizer.schedule == "piecewise"
  else:
    assert c.optimizer.schedule == "linear"
  if "labels" in expected:
    assert len(c.task.labels) == expected["labels"]
    assert c.recipe.sweep["optimizer/learning_rate"] == (1e-5, 2e-5, 3e-5)
    assert c.recipe.sweep["batch_size"] == (16, 32)
  if name == "caption":
    assert c.task.object_tags
  if name == "coqa":
    assert c.task.dialog and c.model.role_type_size == 3 and c.model.turn_type_size == 16

"""UNIMO's fine-tuning recipes: every hyper-parameter of the original's per-dataset scripts
(PaddlePaddle/Research, NLP/UNIMO/script/<family>/<dataset>[_large]/model_conf and run.sh), as
fields of our configs. `configs/<dataset>.py:base` / `:large` (and the caption, retrieval and
SNLI-VE configs' base / large presets) are these recipes.

Conventions:
- batch_size is global: the script's per-GPU BATCH_SIZE x the GPUs its run.sh launches
  (--nproc_per_node / --selected_gpus; GLUE runs on one GPU, is_distributed False);
- epochs: the script's EPOCH / epoch; the runs resolve steps as the original does
  (max_train_steps = epoch x examples // batch, warm-up int(steps x warmup_proportion));
- a grid (GLUE: BATCH_SIZE, LR_RATE, DD_RAND_SEED) is kept in `recipe.sweep`; the defaults are
  each grid's first value, the order the script runs them in;
- values a model_conf does not set come from its run.sh defaults (named "run.sh" below);
- recipe.init_checkpoint names the released checkpoint the script starts from (convert it with
  `python -m unimo_jax.convert paddle` and pass it as init_from).
"""

import pathlib

import ml_collections

from unimo_jax.train.config_parts import config_from_path

SIZES = ("base", "large")

# optimizer settings every script shares (src/utils/optimization.py; run.sh --beta1/2, --epsilon)
_ADAM = {"optimizer.b1": 0.9, "optimizer.b2": 0.98, "optimizer.eps": 1e-6,
         "optimizer.grad_clip_norm": 1.0, "optimizer.schedule": "linear",
         "optimizer.warmup_proportion": 0.06, "model.dropout_rate": 0.1,
         "model.attention_dropout_rate": 0.1}  # unimo_{base,large}_en.json: dropout 0.1

_GLUE_GRID = {"batch_size": (16, 32), "optimizer.learning_rate": (1e-5, 2e-5, 3e-5),
              "seed": (1, 2, 3, 4, 5)}
_GLUE = {**_ADAM,
         "epochs": 10.0,  # EPOCH=("10")
         "batch_size": 16, "optimizer.learning_rate": 1e-5, "seed": 1,  # the grids' first values
         "optimizer.weight_decay": 0.0,  # weight_decay=0
         "optimizer.warmup_proportion": 0.06,  # warmup_ratio=0.06
         "data.max_text_length": 512}  # max_len=512

_SEQ2SEQ = {**_ADAM,
            "task.label_smoothing": 0.1,  # label_smooth=0.1
            "optimizer.weight_decay": 0.01,  # weight_decay=0.01
            "optimizer.warmup_proportion": 0.06}  # WARMUP_PROP=("0.06")


def _gen(src, tgt, out, min_out, beam, penalty, trigram, epochs, per_gpu, lr, pred_batch,
         seed=1):
  """A seq2seq script's values (4 GPUs: run.sh --nproc_per_node 4)."""
  return {**_SEQ2SEQ,
          "data.max_source_length": src,  # max_src_len
          "data.max_target_length": tgt,  # max_tgt_len
          "decode.max_length": out,  # max_out_len
          "decode.min_length": min_out,  # min_out_len
          "decode.beam_size": beam,  # beam_size
          "decode.alpha": penalty,  # length_penalty
          "decode.trigram_blocking": trigram,  # block_trigram
          "epochs": float(epochs),  # epoch
          "batch_size": per_gpu * 4,  # BATCH_SIZE x 4 GPUs
          "optimizer.learning_rate": lr,  # LR_RATE
          "eval_batch": pred_batch * 4,  # pred_batch_size x 4 GPUs
          "seed": seed}  # random_seed / DD_RAND_SEED


_VILLA = {"task.adversarial.type": "villa", "task.adversarial.norm_type": "l2",
          "task.adversarial.init_mag": 0.4, "task.adversarial.steps": 4,
          "task.adversarial.clean_branch": True, "task.adversarial.projection": "unimo"}

RECIPES = {
    "cola": {
        "task": "glue", "script": "script/classification/CoLA{,_large}/model_conf",
        "init": "unimo_{size}_en", "sweep": _GLUE_GRID,
        "base": {**_GLUE, "task.labels": ("0", "1")},  # num_labels=2; metric matthews_corrcoef
    },
    "sst2": {
        "task": "glue", "script": "script/classification/SST-2{,_large}/model_conf",
        "init": "unimo_{size}_en", "sweep": _GLUE_GRID,
        "base": {**_GLUE, "task.labels": ("0", "1")},  # num_labels=2; simple_accuracy
    },
    "mnli": {
        "task": "glue", "script": "script/classification/MNLI-AX{,_large}/model_conf",
        "init": "unimo_{size}_en", "sweep": _GLUE_GRID,
        "base": {**_GLUE, "task.labels": ("contradiction", "entailment", "neutral")},  # 3 labels
    },
    "stsb": {
        "task": "glue", "script": "script/regression/STS-B{,_large}/model_conf",
        "init": "unimo_mnli_{size}_en",  # init_model="./model_files/unimo_mnli_{size}_en"
        "sweep": _GLUE_GRID,
        "base": {**_GLUE, "task.labels": ()},  # num_labels=1: regression, pearson_and_spearman
    },
    "coco_caption": {
        "task": "caption", "script": "script/img2txt/coco{,_large}/model_conf",
        "init": "unimo_{size}_en",
        "base": {**_ADAM, **_VILLA,
                 "task.label_smoothing": 0.1,  # label_smooth=0.1
                 "optimizer.weight_decay": 0.01,  # weight_decay=0.01
                 "optimizer.warmup_proportion": 0.06,  # WARMUP_PROP=("0.06")
                 "optimizer.learning_rate": 7e-6,  # LR_RATE=("7e-6")
                 "epochs": 20.0,  # epoch=20
                 "batch_size": 4 * 16,  # BATCH_SIZE=("4") x 16 GPUs
                 "eval_batch": 8 * 16,  # pred_batch_size=8
                 "seed": 666,  # random_seed=666
                 "data.max_regions": 100,  # max_img_len=101: [IMG] + 100 boxes
                 "task.object_tags": True,  # the vol layout, object_file_local_path
                 "data.max_tags": 100,  # max_obj_len=100
                 "data.max_caption_length": 50,  # max_tgt_len=50
                 "decode.max_length": 50,  # max_out_len=50
                 "decode.min_length": 5,  # min_out_len=5
                 "decode.beam_size": 5,  # beam_size=5
                 "decode.alpha": 0.6,  # length_penalty=0.6
                 "decode.trigram_blocking": False,  # block_trigram="False"
                 "task.adversarial.lr": 0.03,  # adv_lr=0.03
                 "task.adversarial.max_norm": 0.0,  # adv_max_norm=0
                 "task.adversarial.kl_weight": 1.0,  # adv_kl_weight=1.0 (with_pure_model: True)
                 "recipe.object_tags_file": "coco_object_0.35_tot.ids"},
        "large": {"optimizer.learning_rate": 7e-6, "epochs": 10.0,  # epoch=10
                  "batch_size": 2 * 16,  # BATCH_SIZE=("2")
                  "eval_batch": 1 * 16,  # pred_batch_size=1
                  "task.adversarial.lr": 0.05,  # adv_lr=0.05
                  "task.adversarial.max_norm": 0.4,  # adv_max_norm=0.4
                  "recipe.object_tags_file": "coco_object_0.2_tot.ids"},
    },
    "flickr30k": {
        "task": "retrieval", "script": "script/retrieval/Flickr30k{,_large}/model_conf",
        "init": "unimo_{size}_en",
        "base": {**_ADAM,
                 "epochs": 40.0,  # epoch=40
                 "batch_size": 4 * 8,  # batch_size=4 x 8 GPUs
                 "eval_batch": 128,  # test_batch_size=128
                 "seed": 1,  # seed=1
                 "optimizer.learning_rate": 5e-6,  # lr=5e-6
                 "optimizer.schedule": "piecewise",  # run.sh lr_scheduler scale_by_epoch_decay
                 "optimizer.decay_factor": 0.1,  # learning_rate_scale=0.1
                 "optimizer.decay_epochs": (24, 32),  # learning_rate_decay_epoch1/2
                 "optimizer.warmup_proportion": 0.0,  # warmup_step=1 (no warm-up)
                 "optimizer.warmup_steps": 0,
                 "optimizer.weight_decay": 0.1,  # run.sh weight_decay 0.1
                 "data.max_regions": 100,  # max_img_len=101
                 "task.negatives": 10,  # samples_num=20: 10 image + 10 caption negatives
                 "task.negative_source": "train_set",  # drawn from the whole training set
                 "task.circle_margin": 0.2, "task.circle_scale": 1.0},
        "large": {"batch_size": 2 * 8,  # batch_size=2
                  "eval_batch": 96},  # test_batch_size=96
    },
    "snli_ve": {
        "task": "snli_ve", "script": "script/visual_entailment/SNLI-VE{,_large}/model_conf",
        "init": "unimo_{size}_en",
        "base": {**_ADAM, **_VILLA,
                 "epochs": 10.0,  # EPOCH=("10")
                 "batch_size": 12 * 16,  # BATCH_SIZE=("12") x 16 GPUs
                 "eval_batch": 24,  # test_batch_size=24
                 "seed": 1,  # DD_RAND_SEED=("1")
                 "optimizer.learning_rate": 1e-5,  # LR_RATE=("1e-5")
                 "optimizer.weight_decay": 0.0,  # weight_decay=0
                 "optimizer.warmup_proportion": 0.06,  # warmup_ratio=0.06
                 "optimizer.b2": 0.999,  # run.sh --beta2 0.999
                 "data.max_regions": 100,  # run.sh max_img_len 101
                 "task.adversarial.lr": 0.05,  # run.sh adv_lr 0.05
                 "task.adversarial.max_norm": 0.4,  # run.sh adv_max_norm 0.4
                 "task.adversarial.kl_weight": 1.0},  # KL terms unweighted
        "large": {"batch_size": 4 * 16,  # BATCH_SIZE=("4")
                  "eval_batch": 8},  # test_batch_size=8
    },
    "cnndm": {
        "task": "seq2seq", "script": "script/seq2seq/cnndm{,_large}/model_conf",
        "init": "unimo_{size}_en",
        "base": _gen(512, 128, 128, 20, 5, 0.6, True, 20, 8, 4e-5, 10),
        "large": _gen(512, 128, 128, 20, 6, 1.2, True, 20, 8, 2e-5, 8),
    },
    "gigaword": {
        "task": "seq2seq", "script": "script/seq2seq/gigaword{,_large}/model_conf",
        "init": "unimo_{size}_en",
        "base": _gen(128, 32, 32, 5, 5, 0.6, False, 10, 32, 3e-5, 32),
        "large": _gen(128, 32, 32, 5, 6, 1.2, False, 10, 32, 3e-5, 32),
    },
    "squad_qg": {
        "task": "seq2seq", "script": "script/seq2seq/squad_qg{,_large}/model_conf",
        "init": "unimo_{size}_en",
        "base": _gen(416, 96, 48, 5, 5, 1.0, False, 20, 8, 1.25e-5, 8, seed=666),
        "large": _gen(416, 96, 48, 5, 6, 1.2, False, 20, 8, 5e-6, 8, seed=666),
    },
    "coqa": {
        "task": "seq2seq", "script": "script/seq2seq/coqa{,_large}/model_conf",
        "init": "unimo_{size}_en",
        "base": {**_gen(480, 32, 30, 0, 3, 0.0, False, 20, 8, 1e-5, 4, seed=666),
                 "task.dialog": True,  # task_type="dialog"
                 "model.role_type_size": 3,  # role_type_size=3
                 "model.turn_type_size": 16},  # turn_type_size=16
        "large": {**_gen(480, 32, 30, 0, 3, 0.0, False, 20, 8, 8e-6, 8, seed=666),
                  "task.dialog": True, "model.role_type_size": 3, "model.turn_type_size": 16},
    },
}


def recipe_values(dataset: str, size: str) -> dict:
  """The dotted config fields of a recipe (the large preset: base's, updated by large's)."""
  if dataset not in RECIPES:
    raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, found {dataset!r}")
  if size not in SIZES:
    raise ValueError(f"recipe {dataset}: expected a preset from {SIZES}, found {size!r}")
  recipe = RECIPES[dataset]
  values = dict(recipe["base"])
  if size == "large":
    values.update(recipe.get("large", {}))
  return values


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  target = config
  for name in parents:
    if name not in target:
      target[name] = ml_collections.ConfigDict()
    target = target[name]
  if leaf not in target and parents[:1] != ["recipe"]:
    raise KeyError(f"recipe field {dotted!r} is not a field of the config")
  target[leaf] = value


def apply_recipe(config, dataset: str) -> ml_collections.ConfigDict:
  """Writes the recipe of `dataset` at the config's preset (base / large) into `config`."""
  size = config.preset
  recipe = RECIPES[dataset]
  config.recipe = ml_collections.ConfigDict({
      "dataset": dataset,
      "source": recipe["script"].replace("{,_large}", "" if size == "base" else "_large"),
      "init_checkpoint": recipe["init"].format(size=size),
      "sweep": ml_collections.ConfigDict(
          {k.replace(".", "/"): v for k, v in recipe.get("sweep", {}).items()})})
  for dotted, value in recipe_values(dataset, size).items():
    _set(config, dotted, value)
  return config


def recipe_config(dataset: str, arg: str, config_dir) -> ml_collections.ConfigDict:
  """configs/<dataset>.py: the task's config (configs/<task>.py, next to the dataset's file) at
  preset `arg` ('base' or 'large'), with the recipe applied."""
  if arg not in SIZES:
    raise ValueError(f"configs/{dataset}.py: expected a preset from {SIZES}, found {arg!r}")
  task = RECIPES[dataset]["task"]
  config = config_from_path(pathlib.Path(config_dir) / f"{task}.py", arg)
  if "recipe" not in config:
    apply_recipe(config, dataset)
  return config

"""The shared fine-tuning config; configs/<task>.py add each task's fields and defaults."""

import ml_collections

from unimo_jax.train.config_parts import (common_config, loop_config, optimizer_config,
                                    synthetic_data_config)


def finetune_config(task: str, preset: str) -> ml_collections.ConfigDict:
  c = common_config(f"configs/{task}.py", preset)  # preset, seed, model, mesh, rules, distributed
  small = c.preset == "tiny"
  c.task = ml_collections.ConfigDict({"name": task})

  # synthetic_dir default: <init_from>/synthetic_scenes if present (the pretraining's scenes)
  c.data = synthetic_data_config(c.preset)
  c.data.train_dir = ""  # empty: the synthetic version of the task (generated on first use)
  c.data.predict_dir = ""  # --mode=predict input (default: eval_dir)
  c.data.synthetic_train_scenes = 10_000
  c.data.synthetic_eval_scenes = 500
  c.data.eval_limit = 0  # >0: evaluate on the first N eval records (or images) only
  c.data.max_source_length = 128  # text seq2seq sources, [CLS] ... [SEP] included
  c.data.max_target_length = 40
  if small:
    c.data.max_source_length = 24
    c.data.max_target_length = 20

  # VILLA adversarial training (tasks/villa.py; captioning and SNLI-VE): type 'none' or 'villa'
  c.task.adversarial = ml_collections.ConfigDict({
      "type": "none", "steps": 4, "lr": 0.05, "init_mag": 0.4, "norm_type": "l2",
      "max_norm": 0.4, "kl_weight": 1.0, "clean_branch": True, "projection": "unimo"})

  c.decode = ml_collections.ConfigDict({
      "method": "beam", "beam_size": 5, "alpha": 0.6, "min_length": 0, "max_length": 20,
      "trigram_blocking": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0})

  c.batch_size = 64 if small else 32  # global examples per step
  c.epochs = 0.0  # > 0: steps = epochs x usable train records // batch_size (overrides steps)
  c.optimizer = optimizer_config(5e-4 if small else 2e-5, 60 if small else 600)
  # init_from: the pretrained backbone (a params checkpoint, a step directory or a workdir)
  loop_config(c, steps=1000 if small else 10_000, checkpoint_every=500 if small else 2000,
              keep_checkpoints=2, log_every=50 if small else 100, eval_every=0, eval_batch=64)
  return c

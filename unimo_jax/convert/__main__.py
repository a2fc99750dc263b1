"""Weight conversion from the command line.

  python -m unimo_jax.convert roberta --src=DIR_OR_FILE --out=DIR
  python -m unimo_jax.convert paddle --src=DIR --model-config=unimo_base_en.json --out=DIR \
      [--dict=model_files/dict] [--task=glue|retrieval|snli_ve]
  python -m unimo_jax.convert export-roberta --params=CKPT --config=JSON --out=DIR
  python -m unimo_jax.convert detector --src=bua-caffe-frcn-r101-k10-100.pth --out=DIR
  python -m unimo_jax.convert check --params=CKPT --config=JSON --tokenizer=DIR [--save=F.npz]

roberta: a HF RoBERTa checkpoint (model.safetensors or pytorch_model.bin, with config.json and the
vocab.json + merges.txt tokenizer files beside it) -> DIR/params (an orbax params checkpoint for
--config.init_from), DIR/tokenizer (vocab.json + merges.txt, for --config.data.tokenizer),
DIR/model_config.json (the model config fields to use) and DIR/report.json (converted, unused and
freshly initialised parameters). Neither input format needs torch; .bin pickles are read through a
restricted unpickler that refuses anything but tensor storage.

paddle: a released UNIMO checkpoint (a Paddle 1.x persistables directory, one LoDTensor file per
variable, read with numpy) and UNIMO's JSON config -> DIR/params, DIR/model_config.json,
DIR/report.json and, given --dict, DIR/tokenizer (UNIMO's encoder.json / vocab.bpe / vocab.txt).
Text-only programs (the classifier's: no image or LM-head variables) convert with those parts
reported fresh; dialog role / turn tables and an untied LM output are taken when present. With
--task=glue|retrieval|snli_ve the fine-tuned head maps too, and DIR/params holds the task's
{backbone, head} for --config.init_from.

export-roberta: the text encoder and MLM head of a params checkpoint (written by `roberta` or
`save_params`) or of a training step directory (<workdir>/checkpoints/<step>) -> DIR/model.safetensors
+ DIR/config.json, loadable with transformers' RobertaForMaskedLM.from_pretrained(DIR). --config is
a model config JSON (model_config.json from `roberta`) or a run's config.json (its "model" field).

detector: bottom-up-attention weights from a PyTorch port (MILVLG's bua-caffe-frcn-r101-k10-100.pth
or -k36.pth, or unc-nlp/frcnn-vg-finetuned's pytorch_model.bin; .safetensors too) -> DIR/params
(digest-checked) + DIR/detector_config.json + DIR/report.json, for `python -m unimo_jax.data
regions --detector=DIR` and a region model's inference. --boxes=36 writes the fixed-36 rule
(the k36 weights' feature set); --detector-config=JSON overrides other DetectorConfig fields.

check: statistics of a converted checkpoint on a fixed masked caption + image (see convert/check.py),
for comparison with the original implementation on the same input.
"""

import argparse
import json
import pathlib
import shutil
import sys

from unimo_jax.convert.check import DEFAULT_CAPTION

TOKENIZER_FILES = ("vocab.json", "merges.txt")
DICT_SUFFIXES = ("encoder.json", "vocab.bpe", "vocab.txt")


def _roberta(args) -> int:
  from unimo_jax.convert.roberta import config_from_roberta_dir, load_state_dict, params_from_roberta
  src = pathlib.Path(args.src)
  src_dir = src if src.is_dir() else src.parent
  if not (src_dir / "config.json").exists():
    raise SystemExit(f"convert roberta: expected config.json beside the weights in {src_dir}")
  out = _fresh_output(args.out, "roberta")
  config = config_from_roberta_dir(src_dir)
  print(f"reading {src} ...", flush=True)
  params, report = params_from_roberta(load_state_dict(src), config)
  _write_conversion(out, params, config, report)
  missing = [name for name in TOKENIZER_FILES if not (src_dir / name).exists()]
  if missing:
    print(f"warning: no tokenizer written, {src_dir} lacks {missing}", flush=True)
  else:
    _copy_tokenizer([src_dir / name for name in TOKENIZER_FILES], out)
  return 0


def _copy_tokenizer(files, out) -> None:
  (out / "tokenizer").mkdir(exist_ok=True)
  for f in files:
    shutil.copyfile(f, out / "tokenizer" / f.name)


def _write_conversion(out, params, config, report) -> None:
  from unimo_jax.train.checkpoint import save_params
  out.mkdir(parents=True, exist_ok=True)
  save_params(out / "params", params)
  (out / "model_config.json").write_text(config.to_json_best_effort(indent=2))
  (out / "report.json").write_text(json.dumps(report, indent=2))
  print(f"wrote {out}: {len(report['converted'])} weights converted, {len(report['unused'])} "
        f"unused, fresh: {report['fresh']}", flush=True)


def _fresh_output(out, command):
  out = pathlib.Path(out)
  if (out / "params").exists():
    raise SystemExit(f"convert {command}: {out / 'params'} exists; choose an empty --out")
  return out


def _paddle(args) -> int:
  from unimo_jax.convert.paddle import (config_for_paddle_dir, config_from_unimo_file,
                                        params_from_paddle_dir, task_head_from_paddle_dir)
  out = _fresh_output(args.out, "paddle")
  files = []
  if args.dict:  # checked before converting, so a bad --dict leaves nothing behind
    files = [f for suffix in DICT_SUFFIXES for f in sorted(pathlib.Path(args.dict).glob(f"*{suffix}"))]
    if len(files) != len(DICT_SUFFIXES):
      raise SystemExit(f"convert paddle: expected UNIMO dict files ending in {DICT_SUFFIXES} in "
                       f"{args.dict}, found {[f.name for f in files]}")
  config = config_for_paddle_dir(args.src, config_from_unimo_file(args.model_config))
  print(f"reading {args.src} ...", flush=True)
  params, report = params_from_paddle_dir(args.src, config)
  if args.task:  # a fine-tuned program: {'backbone', 'head'}, as a task's params
    head, names = task_head_from_paddle_dir(args.src, args.task)
    params = {"backbone": params, "head": head}
    report["head"] = names
    report["unused"] = [n for n in report["unused"] if n not in names]
  _write_conversion(out, params, config, report)
  if files:
    _copy_tokenizer(files, out)
  return 0


def _detector(args) -> int:
  import dataclasses
  from unimo_jax.convert.detector import params_from_state_dict
  from unimo_jax.convert.roberta import load_state_dict
  from unimo_jax.detector.config import DetectorConfig
  from unimo_jax.detector.extractor import save_detector
  out = _fresh_output(args.out, "detector")
  fields = json.loads(pathlib.Path(args.detector_config).read_text()) if args.detector_config else {}
  config = DetectorConfig.from_dict(fields)
  if args.boxes:
    config = dataclasses.replace(config, min_boxes=args.boxes, max_boxes=args.boxes)
  src = pathlib.Path(args.src)
  print(f"reading {src} ...", flush=True)
  state = load_state_dict(src, nested_key="model")
  params, report = params_from_state_dict(state, config, args.layout)
  save_detector(out, config, params)
  (out / "report.json").write_text(json.dumps(report, indent=2))
  print(f"wrote {out}: {report['converted']} tensors of the {report['layout']} layout, anchors "
        f"from the {report['anchors']}, {config.min_boxes}-{config.max_boxes} boxes per image",
        flush=True)
  return 0


def _params_and_config(args, command):
  """Params from a params checkpoint or a training step directory, and the model config."""
  import ml_collections
  from unimo_jax.train.checkpoint import read_params
  fields = json.loads(pathlib.Path(args.config).read_text())
  config = ml_collections.ConfigDict(fields.get("model", fields))
  try:
    return read_params(args.params), config
  except FileNotFoundError as e:
    raise SystemExit(f"{command}: {e}") from None


def _check(args) -> int:
  import numpy as np
  from unimo_jax.convert.check import format_statistics, statistics
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  params, config = _params_and_config(args, "check")
  stats = statistics(params, config, load_tokenizer(args.tokenizer), args.caption)
  print(format_statistics(stats), flush=True)
  if args.save:
    flat = {f"input_{k}": v for k, v in stats["inputs"].items()}
    for name in ("text", "pair"):
      flat[f"{name}_layer_norms"] = np.asarray(stats[name]["layer_norms"])
    np.savez(args.save, **flat)
    print(f"wrote the inputs and statistics to {args.save}", flush=True)
  return 0


def _export_roberta(args) -> int:
  from unimo_jax.convert.hf_export import export_roberta
  params, config = _params_and_config(args, "export-roberta")
  out = export_roberta(params, config, args.out)
  print(f"wrote {out / 'model.safetensors'} and {out / 'config.json'}", flush=True)
  return 0


def _add_checkpoint_arguments(parser) -> None:
  """--params and --config, as _params_and_config reads them."""
  parser.add_argument("--params", required=True, help="params checkpoint or step directory")
  parser.add_argument("--config", required=True, help="model config JSON or a run's config.json")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m unimo_jax.convert",
                                   description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  roberta = sub.add_parser("roberta", help="HF RoBERTa -> params checkpoint + tokenizer")
  roberta.add_argument("--src", required=True, help="checkpoint directory or weights file")
  roberta.add_argument("--out", required=True, help="output directory")
  paddle = sub.add_parser("paddle", help="released UNIMO (Paddle 1.x) -> params checkpoint")
  paddle.add_argument("--src", required=True, help="Paddle persistables directory")
  paddle.add_argument("--model-config", required=True, help="UNIMO's unimo_*_en.json")
  paddle.add_argument("--out", required=True, help="output directory")
  paddle.add_argument("--dict", default="", help="directory of UNIMO's dict files (tokenizer)")
  paddle.add_argument("--task", default="", help="also map a fine-tuned head: glue, retrieval "
                      "or snli_ve (writes {backbone, head} params for that task's init_from)")
  export = sub.add_parser("export-roberta", help="text encoder -> HF RoBERTa safetensors")
  _add_checkpoint_arguments(export)
  export.add_argument("--out", required=True, help="output directory")
  detector = sub.add_parser("detector", help="bottom-up-attention weights (PyTorch ports) -> "
                            "detector checkpoint")
  detector.add_argument("--src", required=True, help=".pth / .bin / .safetensors weights file")
  detector.add_argument("--out", required=True, help="output directory")
  detector.add_argument("--layout", default="auto", choices=("auto", "milvlg", "hf"))
  detector.add_argument("--boxes", type=int, default=0, help="a fixed number of boxes per "
                        "image (36 for the k36 weights); default: 10 to 100")
  detector.add_argument("--detector-config", default="", help="JSON of DetectorConfig fields")
  check = sub.add_parser("check", help="statistics on a fixed input, to compare implementations")
  _add_checkpoint_arguments(check)
  check.add_argument("--tokenizer", required=True, help="tokenizer file or directory")
  check.add_argument("--caption", default=DEFAULT_CAPTION)
  check.add_argument("--save", default="", help="an .npz for the inputs and statistics")
  args = parser.parse_args(argv)
  handler = {"roberta": _roberta, "paddle": _paddle, "export-roberta": _export_roberta,
             "check": _check, "detector": _detector}[args.command]
  try:
    return handler(args)
  except (ValueError, FileNotFoundError) as e:  # bad input: the message names what and where
    print(f"convert {args.command}: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())

"""Command line for the data tools: python -m unimo_jax.data <command> --help.

  synthetic   generate the synthetic-scenes dataset (the embedded default)
  text        plain-text corpus -> text shards
  bua-tsv     bottom-up-attention features TSV -> image shards
  coco        COCO captions JSON + features TSV -> pair shards
  coco-images COCO captions JSON + a folder of image files -> pair shards for pixel mode
              (--check: validate the files, write nothing)
  regions     image files (or a COCO captions JSON over them) -> region-feature shards through
              the bottom-up-attention detector (--detector: `python -m unimo_jax.convert detector`)
  tokenizer   train a sentencepiece tokenizer on your captions or text
  flickr30k   UNIMO's Flickr30k .ids + bbox100 TSV -> pair task shards
  snli-ve     UNIMO's SNLI-VE ';' records -> pair task shards
  coco-unimo  UNIMO's COCO ';' records -> pair task shards
  tfds        prepare a tfds dataset (array_record) from files in manual_dir (tfds_builders.py)
  augment     add CMCL extras (TF-IDF / rewritten negatives, paraphrases, retrieval) to pair shards
  inspect     print a dataset's metadata and its first record
"""

import argparse
import json
import logging
import os
import pathlib
import sys

import numpy as np

from unimo_jax.data.formats import augment, converters, records
from unimo_jax.data.formats.tokenizers import load_tokenizer


def _parser():
  p = argparse.ArgumentParser(prog="python -m unimo_jax.data", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  s = sub.add_parser("synthetic", help="generate the synthetic scenes")
  s.add_argument("--out", required=True)
  s.add_argument("--pairs", type=int, default=50_000)
  s.add_argument("--eval-pairs", type=int, default=1_000)
  s.add_argument("--images", type=int, default=10_000)
  s.add_argument("--texts", type=int, default=20_000)
  s.add_argument("--feature-dim", type=int, default=32)
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--twin-scenes", action="store_true",
                 help="also write each training scene's mirror and binding swap as pairs")

  def common(q, tokenizer=False):
    q.add_argument("--out", required=True, help="output dataset directory")
    q.add_argument("--records-per-shard", type=int, default=10_000)
    q.add_argument("--skip-bad", action="store_true", help="count and log bad lines, not fail")
    if tokenizer:
      q.add_argument("--tokenizer", required=True, help="sentencepiece .model or BPE directory")

  s = sub.add_parser("text", help="plain-text corpus -> text shards")
  s.add_argument("inputs", nargs="+")
  s.add_argument("--blank-line-separated", action="store_true")
  s.add_argument("--segment-length", type=int, default=510)
  common(s, tokenizer=True)

  for name, helptext in (("bua-tsv", "bottom-up TSV -> image shards"),):
    s = sub.add_parser(name, help=helptext)
    s.add_argument("inputs", nargs="+")
    s.add_argument("--feature-dim", type=int)
    s.add_argument("--num-classes", type=int)
    common(s)

  s = sub.add_parser("coco", help="COCO captions JSON + features TSV -> pair shards")
  s.add_argument("--captions", required=True)
  s.add_argument("--features", required=True)
  s.add_argument("--feature-dim", type=int)
  s.add_argument("--num-classes", type=int)
  common(s, tokenizer=True)

  s = sub.add_parser("coco-images", help="COCO captions JSON + a folder of image files -> "
                     "pair shards for pixel mode")
  s.add_argument("--captions", required=True)
  s.add_argument("--images", required=True, help="the folder the JSON's file_name values are in")
  s.add_argument("--check", action="store_true", help="check the JSON and decode every image; "
                 "write nothing (--out and --tokenizer are then optional)")
  s.add_argument("--max-caption-length", type=int, default=0, help="count the captions longer "
                 "than this many tokens with [CLS] and [SEP] (the run's data.max_caption_length)")
  s.add_argument("--out", help="output dataset directory")
  s.add_argument("--tokenizer", help="sentencepiece .model or BPE directory")
  s.add_argument("--records-per-shard", type=int, default=10_000)
  s.add_argument("--skip-bad", action="store_true", help="count and log bad lines, not fail")

  s = sub.add_parser("regions", help="image files -> region-feature shards (the detector)")
  s.add_argument("--images", required=True, help="folder of image files")
  s.add_argument("--captions", help="COCO-format captions JSON over --images: pair shards "
                 "(default: image shards of every file under --images)")
  s.add_argument("--detector", required=True, help="detector checkpoint directory")
  s.add_argument("--out", required=True, help="output dataset directory")
  s.add_argument("--tokenizer", help="sentencepiece .model or BPE directory (with --captions)")
  s.add_argument("--min-boxes", type=int, help="default: the checkpoint's (10)")
  s.add_argument("--max-boxes", type=int, help="default: the checkpoint's (100)")
  s.add_argument("--conf", type=float, help="confidence threshold; default: the checkpoint's (0.2)")
  s.add_argument("--attributes", action="store_true", help="also store the 401-way attribute "
                 "distributions (attr_probs)")
  s.add_argument("--images-per-shard", type=int, default=1000)
  s.add_argument("--batch-size", type=int, default=1, help="images per detector call (one "
                 "compiled program per size bucket and batch size)")
  s.add_argument("--threads", type=int, default=8, help="threads decoding and resizing images")
  s.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() first "
                 "(auto-detected on TPU pods and clusters): each process extracts its share of "
                 "the shards")
  s.add_argument("--coordinator", default="", help="or name the launch: the coordinator's "
                 "host:port, with --num-processes and --process-id")
  s.add_argument("--num-processes", type=int, default=0)
  s.add_argument("--process-id", type=int, default=-1)
  s.add_argument("--skip-bad", action="store_true", help="count and log files that do not "
                 "decode, not fail")

  s = sub.add_parser("tokenizer", help="train a sentencepiece tokenizer on your captions or text")
  s.add_argument("--train", nargs="+", required=True, help="text files (a line each) or "
                 "COCO-format captions JSON files")
  s.add_argument("--vocab-size", type=int, required=True)
  s.add_argument("--model-type", default="unigram", choices=("unigram", "bpe", "word", "char"))
  s.add_argument("--out", required=True, help="the .model file to write")

  s = sub.add_parser("flickr30k", help="UNIMO Flickr30k .ids + bbox100 TSVs -> pair task shards")
  s.add_argument("--ids", required=True)
  s.add_argument("--features", nargs="+", required=True)
  s.add_argument("--feature-dim", type=int, default=2048)
  s.add_argument("--num-classes", type=int)
  common(s)

  for name in ("snli-ve", "coco-unimo"):
    s = sub.add_parser(name, help=f"UNIMO {name} ';' records -> pair task shards")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--feature-dim", type=int, default=2048)
    if name == "coco-unimo":
      s.add_argument("--num-classes", type=int)
      s.add_argument("--objects", help="UNIMO's coco_object_*.ids: detector object tags per image")
    common(s)

  s = sub.add_parser("tfds", help="prepare a tfds dataset from files in --manual-dir")
  s.add_argument("builder", help="<builder>[/<config>], e.g. unimo_coco_karpathy/regions")
  s.add_argument("--manual-dir", required=True, help="the folder holding the builder's files")
  s.add_argument("--data-dir", default="", help="where to prepare it (default: tfds's, "
                 "$TFDS_DATA_DIR or ~/tensorflow_datasets); read it with data.tfds_data_dir")
  s.add_argument("--feature-dim", type=int, help="region feature size to require")
  s.add_argument("--num-classes", type=int, help="detector classes to require")
  s.add_argument("--skip-bad", action="store_true", help="count and log bad lines, not fail")
  s.add_argument("--detector", help="detector checkpoint (unimo_regions only)")

  s = sub.add_parser("augment", help="add CMCL extras to a pair dataset")
  s.add_argument("--pairs", required=True)
  s.add_argument("--images", help="image dataset for retrieved images")
  s.add_argument("--texts", help="text dataset for retrieved texts")
  s.add_argument("--paraphrases", help="TSV '<pair id>\\t<paraphrase>'")
  s.add_argument("--tfidf-negatives", type=int, default=2)
  s.add_argument("--rewrites", type=int, default=2)
  s.add_argument("--retrieved-images", type=int, default=2)
  s.add_argument("--retrieved-texts", type=int, default=2)
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--out", required=True)
  s.add_argument("--tokenizer", required=True)

  s = sub.add_parser("inspect", help="metadata and first record of a dataset")
  s.add_argument("dataset")
  return p


def _show(value):
  if isinstance(value, np.ndarray):
    return f"{value.dtype}{list(value.shape)}"
  if isinstance(value, list):
    return f"[{len(value)} arrays]"
  return repr(value)


def _training_lines(paths) -> list:
  """Text lines of .txt files, or the captions of COCO-format JSON files."""
  lines = []
  for path in map(pathlib.Path, paths):
    if not path.is_file():
      raise records.DataError(f"{path}: expected a text or COCO captions JSON file, found none")
    if path.suffix == ".json":
      try:
        data = json.loads(path.read_text())
        lines += [a["caption"] for a in data["annotations"]]
      except (ValueError, KeyError, TypeError) as e:
        raise records.DataError(f"{path}: expected COCO captions JSON ('annotations' with "
                                f"'caption'), found {type(e).__name__}: {e}") from None
    else:
      lines += path.read_text(errors="replace").splitlines()
  return lines


def _train_tokenizer(args) -> int:
  from unimo_jax.data.formats.tokenizers import SentencePieceTokenizer
  lines = _training_lines(args.train)
  try:
    tok = SentencePieceTokenizer.train(lines, vocab_size=args.vocab_size,
                                       model_type=args.model_type, out_path=args.out)
  except (ValueError, RuntimeError) as e:
    raise records.DataError(f"--train: cannot train a tokenizer of {args.vocab_size} pieces on "
                            f"{len(lines)} lines ({str(e).splitlines()[0][:200]})") from None
  print(f"wrote {args.out}: sentencepiece ({args.model_type}), {tok.vocab_size} pieces, trained "
        f"on {len(lines)} lines; use it with --config.data.tokenizer={args.out}")
  return 0


def _extract_regions(args) -> int:
  import dataclasses
  import jax
  from unimo_jax.data.formats import converters, region_extraction
  from unimo_jax.detector.extractor import Extractor, load_detector
  if args.coordinator:
    if args.num_processes <= 0 or args.process_id < 0:
      raise records.DataError("regions --coordinator: expected --num-processes > 0 and "
                              f"--process-id >= 0, found {args.num_processes} and "
                              f"{args.process_id}")
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  elif args.distributed:
    jax.distributed.initialize()
  config, params = load_detector(args.detector)
  changes = {k: v for k, v in (("min_boxes", args.min_boxes), ("max_boxes", args.max_boxes),
                               ("conf_thresh", args.conf)) if v is not None}
  config = dataclasses.replace(config, **changes)
  skips = converters.Skips(args.skip_bad)
  if args.captions:
    items = region_extraction.captioned_images(args.captions, args.images, skips)
  else:
    items = region_extraction.image_files(args.images)
  tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None

  def barrier():
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("unimo_jax regions: every shard written")

  print(f"regions: {len(items)} images, process {jax.process_index()} of {jax.process_count()}, "
        f"detector {args.detector} ({config.min_boxes}-{config.max_boxes} boxes, confidence "
        f">= {config.conf_thresh}) on {jax.devices()[0].platform}", flush=True)
  meta = region_extraction.extract_regions(
      items, args.out, Extractor(config, params, batch_size=args.batch_size),
      kind="pair" if args.captions else "image", images_per_shard=args.images_per_shard,
      skip_bad=args.skip_bad, attributes=args.attributes, tokenizer=tokenizer,
      process_index=jax.process_index(), process_count=jax.process_count(),
      threads=args.threads, barrier=barrier,
      metadata={"source": str(args.captions or args.images), "skipped_entries": skips.count})
  if meta is not None:
    print(f"wrote {meta['num_records']} {meta['kind']} records of {meta['images']} images to "
          f"{args.out}" + (f" ({meta['skipped']} files skipped)" if meta["skipped"] else ""))
  return 0


def _prepare_tfds(args):
  from unimo_jax.data.formats import tfds_builders
  data_dir = args.data_dir or os.environ.get("TFDS_DATA_DIR") or str(
      pathlib.Path.home() / "tensorflow_datasets")
  extra = {"detector": args.detector} if args.builder.startswith("unimo_regions") else {}
  builder = tfds_builders.build(args.builder, args.manual_dir, data_dir,
                                skip_bad=args.skip_bad, feature_dim=args.feature_dim,
                                num_classes=args.num_classes, **extra)
  splits = ", ".join(f"{name} {info.num_examples:,}" for name, info in builder.info.splits.items())
  skipped = builder.info.metadata.get("skipped") or {}
  print(f"prepared tfds:{args.builder} in {data_dir}: {splits}"
        + (f" ({sum(skipped.values())} bad lines skipped)" if any(skipped.values()) else ""))
  print(f"read it as tfds:{args.builder}@<split> with data.tfds_data_dir={data_dir}")
  return 0


def main(argv=None):
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  args = _parser().parse_args(argv)
  writer = {}
  if hasattr(args, "records_per_shard"):
    writer["records_per_shard"] = args.records_per_shard
  try:
    if args.command == "synthetic":
      from unimo_jax.data.synthetic.scene_dataset import write_synthetic
      write_synthetic(args.out, pairs=args.pairs, eval_pairs=args.eval_pairs, images=args.images,
                      texts=args.texts, feature_dim=args.feature_dim, seed=args.seed,
                      twin_scenes=args.twin_scenes)
      return 0
    if args.command == "inspect":
      meta = records.read_metadata(args.dataset)
      print(json.dumps(meta, indent=2))
      first = records.ShardSource(args.dataset)[0]
      for key, value in first.items():
        print(f"  {key}: {_show(value)}")
      return 0
    if args.command == "tfds":
      return _prepare_tfds(args)
    if args.command == "regions":
      return _extract_regions(args)
    if args.command == "text":
      meta = converters.convert_text_corpus(
          args.inputs, args.out, load_tokenizer(args.tokenizer),
          blank_line_separated=args.blank_line_separated, segment_length=args.segment_length,
          **writer)
    elif args.command == "bua-tsv":
      meta = converters.convert_bottom_up_tsv(args.inputs, args.out, feature_dim=args.feature_dim,
                                              num_classes=args.num_classes, skip_bad=args.skip_bad,
                                              **writer)
    elif args.command == "coco":
      meta = converters.convert_coco_captions(
          args.captions, args.features, args.out, load_tokenizer(args.tokenizer),
          feature_dim=args.feature_dim, num_classes=args.num_classes, skip_bad=args.skip_bad,
          **writer)
    elif args.command == "tokenizer":
      return _train_tokenizer(args)
    elif args.command == "coco-images":
      if not args.check and not (args.out and args.tokenizer):
        raise records.DataError("coco-images: expected --out and --tokenizer (or --check)")
      meta = converters.convert_coco_images(
          args.captions, args.images, None if args.check else args.out,
          load_tokenizer(args.tokenizer) if args.tokenizer else None, skip_bad=args.skip_bad,
          max_caption_length=args.max_caption_length, **writer)
      if meta.get("longer_captions"):
        print(f"{meta['longer_captions']} of {meta['num_records']} captions are longer than "
              f"{args.max_caption_length} tokens with [CLS] and [SEP]: a run with that "
              "data.max_caption_length cuts them")
      if args.check:
        print(f"checked {meta['images']} images and {meta['num_records']} captions in "
              f"{args.captions}" + (f" ({meta['skipped']} bad entries)" if meta["skipped"] else
                                    ": every image decodes"))
        return 0
    elif args.command == "flickr30k":
      meta = converters.convert_flickr30k(args.ids, args.features, args.out,
                                          feature_dim=args.feature_dim,
                                          num_classes=args.num_classes, skip_bad=args.skip_bad,
                                          **writer)
    elif args.command == "snli-ve":
      meta = converters.convert_snli_ve(args.inputs, args.out, feature_dim=args.feature_dim,
                                        skip_bad=args.skip_bad, **writer)
    elif args.command == "coco-unimo":
      meta = converters.convert_coco_unimo(args.inputs, args.out, feature_dim=args.feature_dim,
                                           num_classes=args.num_classes, skip_bad=args.skip_bad,
                                           objects=args.objects, **writer)
    elif args.command == "augment":
      meta = augment.augment_pairs(
          args.pairs, args.out, load_tokenizer(args.tokenizer), image_dir=args.images,
          text_dir=args.texts, paraphrase_file=args.paraphrases,
          tfidf_negatives=args.tfidf_negatives, rewrites=args.rewrites,
          retrieved_images=args.retrieved_images, retrieved_texts=args.retrieved_texts,
          seed=args.seed)
  except records.DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {meta['num_records']} {meta['kind']} records to {args.out}"
        + (f" ({meta['skipped']} bad lines skipped)" if meta.get("skipped") else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())

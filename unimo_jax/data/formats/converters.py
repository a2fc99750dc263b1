"""Readers of the files users have, and converters writing their records to shards (library
functions; CLI in __main__.py). The tfds builders (tfds_builders.py) yield the same readers'
records, so a format is parsed in one place whichever the sink.

  text corpus     one document per line, or documents separated by blank lines -> text shards
  bottom-up TSV   image_id, image_w, image_h, num_boxes, boxes, features[, cls_prob]
                  (base64 float32) -> image shards
  COCO captions   captions JSON + a bottom-up features TSV -> pair shards
  UNIMO formats   Flickr30k (.ids + bbox100 TSV), SNLI-VE (';' records), COCO (';' records, with h
                  before w) -> task shards (pair records with the task's labels); UNIMO's file
                  lists (read_filelist)
  readers only    Karpathy's split file (karpathy_records: regions or image files), VQA v2
                  questions + annotations (vqa_records), CC-style captioned images
                  (cc_tsv_records, cc_folder_records)

Bad input raises DataError naming the file and line; with skip_bad=True the line is skipped,
counted and logged, and the count is returned in the metadata ('skipped').
"""

import base64
import binascii
import collections
import gzip
import json
import logging
import pathlib

import numpy as np

from unimo_jax.data.formats.records import ShardWriter
from unimo_jax.errors import DataError


class Skips:
  """Bad input: raised, or with skip_bad counted and logged."""

  def __init__(self, skip_bad):
    self.skip_bad, self.count = skip_bad, 0

  def handle(self, error):
    if not self.skip_bad:
      raise error
    self.count += 1
    logging.warning("skipped (%d so far): %s", self.count, error)


def _write_records(records, out_dir, kind, skips, **writer_kwargs) -> dict:
  with ShardWriter(out_dir, kind, **writer_kwargs) as w:
    for record in records:
      w.write(record)
    w.meta["skipped"] = skips.count
  return w.meta


def _b64_floats(text, count, where, name):
  try:
    raw = base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError) as e:
    raise DataError(f"{where}: field {name!r} is not valid base64 ({e})") from None
  if len(raw) % 4:
    raise DataError(f"{where}: field {name!r} holds {len(raw)} bytes, not whole float32 values")
  values = np.frombuffer(raw, np.float32)
  if count is not None and values.size != count:
    raise DataError(f"{where}: field {name!r}: expected {count} float32 values, found {values.size}")
  return values


def _int(text, where, name):
  try:
    return int(str(text).strip())
  except ValueError:
    raise DataError(f"{where}: field {name!r}: expected an integer, found {text!r}") from None


def _ids(text, where, name):
  try:
    return np.asarray([int(t) for t in text.split()], np.int32)
  except ValueError:
    raise DataError(f"{where}: field {name!r}: expected space-separated ids") from None


def _strip_specials(ids, cls_id=0, sep_id=2):
  if len(ids) and ids[0] == cls_id:
    ids = ids[1:]
  if len(ids) and ids[-1] == sep_id:
    ids = ids[:-1]
  return ids


def region_record(where, image_id, w, h, num_boxes, boxes, features, probs=None,
                  feature_dim=None, num_classes=None):
  """An image record from the text fields of a detector row (base64 float32 arrays)."""
  n = _int(num_boxes, where, "num_boxes")
  w, h = float(_int(w, where, "image_w")), float(_int(h, where, "image_h"))
  if n < 0 or w <= 0 or h <= 0:
    raise DataError(f"{where}: expected num_boxes >= 0 and a positive size, found {n}, {w}x{h}")
  box = _b64_floats(boxes, n * 4, where, "boxes").reshape(n, 4)
  feat = _b64_floats(features, None, where, "features")
  if n and (feat.size % n or (feature_dim and feat.size != n * feature_dim)):
    raise DataError(f"{where}: field 'features': expected {n} x {feature_dim or 'D'} float32 "
                    f"values, found {feat.size}")
  record = {"image_id": str(image_id), "image_w": int(w), "image_h": int(h), "boxes": box,
            "region_features": feat.reshape(n, -1) if n else feat.reshape(0, feature_dim or 0)}
  if probs is not None and probs != "":
    p = _b64_floats(probs, None, where, "cls_prob")
    if n and (p.size % n or (num_classes and p.size != n * num_classes)):
      raise DataError(f"{where}: field 'cls_prob': expected {n} x {num_classes or 'C'} values, "
                      f"found {p.size}")
    record["class_probs"] = p.reshape(n, -1)
  return record


def _lines(path):
  """(where, line) of a text file, gzip-compressed when its name ends in .gz."""
  path = pathlib.Path(path)
  if not path.exists():
    raise DataError(f"{path}: file not found")
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      yield f"{path} line {number}", line.rstrip("\n")


def _delimited_records(path, sep, counts, names, skips, build):
  """build(where, {name: field}) for every non-empty line with one of `counts` fields.

  names: the field names of the longest layout; a bad line raises (or is skipped) by name.
  """
  label = "tab" if sep == "\t" else f"'{sep}'"
  for where, line in _lines(path):
    if not line.strip():
      continue
    fields = line.split(sep)
    try:
      if len(fields) not in counts:
        raise DataError(f"{where}: expected {' or '.join(map(str, counts))} {label}-separated "
                        f"fields ({', '.join(names)}), found {len(fields)}")
      yield build(where, dict(zip(names, fields)))
    except DataError as e:
      if skips is None:
        raise
      skips.handle(e)


# ---- text corpora ----------------------------------------------------------------------------

def read_documents(path, blank_line_separated=False):
  """Documents from a corpus file: one per line, or paragraphs separated by blank lines."""
  doc = []
  for _, line in _lines(path):
    if not blank_line_separated:
      if line.strip():
        yield line.strip()
      continue
    if line.strip():
      doc.append(line.strip())
    elif doc:
      yield " ".join(doc)
      doc = []
  if doc:
    yield " ".join(doc)


def convert_text_corpus(paths, out_dir, tokenizer, *, blank_line_separated=False,
                        segment_length=510, **writer_kwargs) -> dict:
  """Tokenised documents, cut into segments of at most segment_length tokens."""
  written = 0
  with ShardWriter(out_dir, "text", vocabulary=tokenizer.describe(), **writer_kwargs) as w:
    for path in paths:
      batch = list(read_documents(path, blank_line_separated))
      for ids in tokenizer.encode_batch(batch):
        for start in range(0, len(ids), segment_length):
          w.write({"input_ids": ids[start:start + segment_length]})
          written += 1
    if not written:
      raise DataError(f"text corpus {[str(p) for p in paths]}: expected documents, found none")
  return w.meta


# ---- detector features -----------------------------------------------------------------------

BOTTOM_UP_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features",
                    "cls_prob")


def read_bottom_up_tsv(path, *, feature_dim=None, num_classes=None, skips=None):
  """Image records from a bottom-up-attention TSV (6 fields, or 7 with cls_prob)."""
  def build(where, f):
    return region_record(where, f["image_id"], f["image_w"], f["image_h"], f["num_boxes"],
                         f["boxes"], f["features"], f.get("cls_prob"), feature_dim=feature_dim,
                         num_classes=num_classes)
  yield from _delimited_records(path, "\t", (6, 7), BOTTOM_UP_FIELDS, skips, build)


def convert_bottom_up_tsv(paths, out_dir, *, feature_dim=None, num_classes=None, skip_bad=False,
                          **writer_kwargs) -> dict:
  skips = Skips(skip_bad)
  records = (record for path in paths for record in read_bottom_up_tsv(
      path, feature_dim=feature_dim, num_classes=num_classes, skips=skips))
  return _write_records(records, out_dir, "image", skips, region_feature_dim=feature_dim,
                        num_classes=num_classes, **writer_kwargs)


def _read_coco_json(path, lists) -> dict:
  """A COCO-format captions JSON holding the named lists; DataError naming the file otherwise."""
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: cannot read COCO captions JSON ({e})") from None
  if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in lists):
    names = " and ".join(map(repr, lists))
    wanted = f"an {names} list" if len(lists) == 1 else f"{names} lists"
    raise DataError(f"{path}: expected a JSON object with {wanted}")
  return data


def _captions_of_known_images(annotations, path, known, why_unknown, skips) -> list:
  """The annotations with an 'image_id' in `known` and a non-empty caption; the others are
  DataErrors (`why_unknown` says what the image lacks), raised or counted by `skips`."""
  captions = []
  for i, ann in enumerate(annotations):
    where = f"{path} annotation {i}"
    try:
      if "image_id" not in ann or not str(ann.get("caption", "")).strip():
        raise DataError(f"{where}: expected 'image_id' and a non-empty 'caption'")
      if str(ann["image_id"]) not in known:
        raise DataError(f"{where}: caption for image {ann['image_id']!r}, {why_unknown}")
      captions.append(ann)
    except DataError as e:
      skips.handle(e)
  return captions


def convert_coco_captions(captions_json, features_tsv, out_dir, tokenizer, *, feature_dim=None,
                          num_classes=None, skip_bad=False, **writer_kwargs) -> dict:
  """COCO-style {'annotations': [{'image_id', 'caption'}]} + features TSV -> pair shards."""
  path = pathlib.Path(captions_json)
  annotations = _read_coco_json(path, ("annotations",))["annotations"]
  skips = Skips(skip_bad)
  images = {}
  for record in read_bottom_up_tsv(features_tsv, feature_dim=feature_dim,
                                   num_classes=num_classes, skips=skips):
    images[record["image_id"]] = record
  captions = _captions_of_known_images(annotations, path, images,
                                       f"which has no features in {features_tsv}", skips)
  ids = tokenizer.encode_batch([a["caption"].strip() for a in captions])
  with ShardWriter(out_dir, "pair", region_feature_dim=feature_dim, num_classes=num_classes,
                   vocabulary=tokenizer.describe(), **writer_kwargs) as w:
    for ann, caption_ids in zip(captions, ids):
      w.write(dict(images[str(ann["image_id"])], caption=ann["caption"].strip(),
                   caption_id=str(ann.get("id", "")), caption_ids=caption_ids))
    w.meta["skipped"] = skips.count
  return w.meta


def coco_image_files(images, path, root, skips, check=None) -> dict:
  """{str(id): file under root} of a COCO-format JSON's 'images' entries; an entry without 'id'
  and 'file_name', or whose file fails check(file, where), is a DataError handled by skips."""
  files = {}
  for i, image in enumerate(images):
    where = f"{path} image {i}"
    try:
      if "id" not in image or not image.get("file_name"):
        raise DataError(f"{where}: expected 'id' and 'file_name'")
      file = pathlib.Path(root) / image["file_name"]
      if check is not None:
        check(file, where)
      files[str(image["id"])] = file
    except DataError as e:
      skips.handle(e)
  return files


def convert_coco_images(captions_json, image_dir, out_dir, tokenizer, *, skip_bad=False,
                        max_caption_length: int = 0, **writer_kwargs) -> dict:
  """COCO-format captions JSON ({'images': [{'id', 'file_name'}], 'annotations': [{'image_id',
  'caption'}]}) over a folder of image files -> pair shards for pixel mode: one record per
  caption with the image's absolute path (`image_file`; the files stay where they are and are
  decoded when read). Every image is decoded once here: one that is missing or unreadable is a
  DataError naming the file, or, with skip_bad, skipped with its captions and counted.
  out_dir None checks the files and writes nothing (the tokenizer is then optional).
  max_caption_length > 0 (the model's data.max_caption_length, [CLS] and [SEP] included) counts
  the captions a run would cut, in the returned 'longer_captions'."""
  from unimo_jax.data.formats.images import read_image
  path, root = pathlib.Path(captions_json), pathlib.Path(image_dir).resolve()
  data = _read_coco_json(path, ("images", "annotations"))
  skips = Skips(skip_bad)
  # every image decoded once: a corrupt file is named now, not mid-training
  files = coco_image_files(data["images"], path, root, skips, check=read_image)
  captions = _captions_of_known_images(data["annotations"], path, files,
                                       f"which is not a readable image of {path}'s 'images'",
                                       skips)
  ids = tokenizer.encode_batch([a["caption"].strip() for a in captions]) if tokenizer else []
  longer = sum(len(x) + 2 > max_caption_length for x in ids) if max_caption_length else 0
  if out_dir is None:
    return {"kind": "pair", "num_records": len(captions), "images": len(files),
            "skipped": skips.count, "longer_captions": longer, "checked_only": True}
  with ShardWriter(out_dir, "pair", vocabulary=tokenizer.describe(), image_root=str(root),
                   **writer_kwargs) as w:
    for ann, caption_ids in zip(captions, ids):
      w.write({"image_id": str(ann["image_id"]), "image_file": str(files[str(ann["image_id"])]),
               "caption": ann["caption"].strip(), "caption_id": str(ann.get("id", "")),
               "caption_ids": caption_ids})
    w.meta["skipped"] = skips.count
    w.meta["longer_captions"] = longer
  return w.meta


# ---- UNIMO's released fine-tuning formats -----------------------------------------------------

FLICKR_IMAGE_FIELDS = ("img_filename", "image_w", "image_h", "number_box", "boxes", "features",
                       "probs")
FLICKR_CAPTION_FIELDS = ("token_ids", "sent_ids", "pos_ids", "image_name", "sent_id")


def flickr30k_records(ids_file, features_tsvs, *, feature_dim=2048, num_classes=None,
                      skips=None):
  """Pair records of UNIMO's Flickr30k: caption lines 'token_ids;sent_ids;pos_ids;image_name;
  sent_id' over bbox100 TSV rows 'img_filename, image_w, image_h, number_box, boxes, features,
  probs' (the images are held in memory, as UNIMO's retrieval reader holds them)."""
  skips = skips or Skips(False)

  def image(where, f):
    return f["img_filename"], region_record(
        where, f["img_filename"], f["image_w"], f["image_h"], f["number_box"], f["boxes"],
        f["features"], f["probs"], feature_dim=feature_dim, num_classes=num_classes)

  images = dict(record for tsv in features_tsvs for record in _delimited_records(
      tsv, "\t", (7,), FLICKR_IMAGE_FIELDS, skips, image))

  def pair(where, f):
    if f["image_name"] not in images:
      raise DataError(f"{where}: caption for image {f['image_name']!r}, which has no features")
    caption = _strip_specials(_ids(f["token_ids"], where, "token_ids"))
    return dict(images[f["image_name"]], caption_ids=caption, caption_id=f["sent_id"])

  yield from _delimited_records(ids_file, ";", (5,), FLICKR_CAPTION_FIELDS, skips, pair)


def convert_flickr30k(ids_file, features_tsvs, out_dir, *, feature_dim=2048, num_classes=None,
                      skip_bad=False, **writer_kwargs) -> dict:
  """Flickr30k (flickr30k_records) -> pair task shards."""
  skips = Skips(skip_bad)
  records = flickr30k_records(ids_file, features_tsvs, feature_dim=feature_dim,
                              num_classes=num_classes, skips=skips)
  return _write_records(records, out_dir, "pair", skips, region_feature_dim=feature_dim,
                        num_classes=num_classes, task="flickr30k", **writer_kwargs)


SNLI_VE_FIELDS = ("image_id", "data_id", "label", "token_ids", "sent_ids", "pos_ids", "unused_6",
                  "image_w", "image_h", "number_box", "boxes", "features", "unused_12", "unused_13")
COCO_UNIMO_FIELDS = ("image_id", "caption_id", "token_ids", "sent_ids", "pos_ids", "seg_labels",
                     "node_attr_b", "node_attr_e", "image_h", "image_w", "number_box", "boxes",
                     "probs", "attr_probs", "features", "label")


def snli_ve_records(paths, *, feature_dim=2048, skips=None):
  """Pair records with 'label' from SNLI-VE ';' records (14 fields)."""
  skips = skips or Skips(False)

  def build(where, f):
    record = region_record(where, f["image_id"], f["image_w"], f["image_h"], f["number_box"],
                           f["boxes"], f["features"], feature_dim=feature_dim)
    return dict(record, caption_ids=_strip_specials(_ids(f["token_ids"], where, "token_ids")),
                label=_int(f["label"], where, "label"), caption_id=f["data_id"])

  for path in paths:
    yield from _delimited_records(path, ";", (14,), SNLI_VE_FIELDS, skips, build)


def convert_snli_ve(paths, out_dir, *, feature_dim=2048, skip_bad=False, **writer_kwargs) -> dict:
  """SNLI-VE (snli_ve_records) -> pair task shards."""
  skips = Skips(skip_bad)
  return _write_records(snli_ve_records(paths, feature_dim=feature_dim, skips=skips), out_dir,
                        "pair", skips, region_feature_dim=feature_dim, task="snli_ve",
                        **writer_kwargs)


COCO_OBJECT_FIELDS = ("image_id", "obj_token_ids", "obj_sent_ids", "obj_pos_ids")


def read_coco_objects(path, skips=None) -> dict:
  """UNIMO's object-tag file (lines 'image_id;obj_token_ids;obj_sent_ids;obj_pos_ids') ->
  {image_id: tag ids without [CLS]/[SEP]}."""
  skips = skips or Skips(False)

  def build(where, f):
    return f["image_id"], _strip_specials(_ids(f["obj_token_ids"], where, "obj_token_ids"))
  return dict(_delimited_records(path, ";", (4,), COCO_OBJECT_FIELDS, skips, build))


def coco_unimo_records(paths, *, feature_dim=2048, num_classes=None, objects=None, skips=None):
  """Pair records of UNIMO's COCO caption ';' records (16 fields; image_h before image_w; the
  id is image_id[9:]); with `objects` (UNIMO's coco_object_*.ids) each record also gets its
  image's detector object tags as tag_ids."""
  skips = skips or Skips(False)
  tags = read_coco_objects(objects, skips) if objects else None

  def build(where, f):
    record = region_record(where, f["image_id"][9:], f["image_w"], f["image_h"], f["number_box"],
                           f["boxes"], f["features"], f["probs"], feature_dim=feature_dim,
                           num_classes=num_classes)
    record = dict(record, caption_ids=_strip_specials(_ids(f["token_ids"], where, "token_ids")),
                  caption_id=f["caption_id"])
    if tags is not None:
      key = f["image_id"] if f["image_id"] in tags else f["image_id"][9:]
      if key not in tags:
        raise DataError(f"{where}: image {f['image_id']!r} has no line in the object file "
                        f"{objects}")
      record["tag_ids"] = tags[key]
    return record

  for path in paths:
    yield from _delimited_records(path, ";", (16,), COCO_UNIMO_FIELDS, skips, build)


def convert_coco_unimo(paths, out_dir, *, feature_dim=2048, num_classes=None, skip_bad=False,
                       objects=None, **writer_kwargs) -> dict:
  """UNIMO's COCO captions (coco_unimo_records) -> pair task shards."""
  skips = Skips(skip_bad)
  records = coco_unimo_records(paths, feature_dim=feature_dim, num_classes=num_classes,
                               objects=objects, skips=skips)
  return _write_records(records, out_dir, "pair", skips, region_feature_dim=feature_dim,
                        num_classes=num_classes, task="coco_caption", **writer_kwargs)


# ---- lists of files, Karpathy's split file, VQA v2, CC-style captioned images ----------------

def read_filelist(path, root) -> list:
  """The data files a UNIMO file list names, one per line. Entries were written relative to
  UNIMO's working directory ('./data/SNLI-VE/...'); each is looked for as given, under `root`
  (the folder holding UNIMO's data/ contents), there without the leading data/, and beside the
  list; a missing one is a DataError naming the list and the places looked."""
  path, root = pathlib.Path(path), pathlib.Path(root)
  files = []
  for where, line in _lines(path):
    entry = line.strip()
    if not entry:
      continue
    relative = pathlib.Path(entry)
    parts = [p for p in relative.parts if p != "."]
    tries = [relative, root / relative, path.parent / relative.name]
    if parts and parts[0] == "data":
      tries.insert(2, root.joinpath(*parts[1:]))
    found = next((t for t in tries if t.is_file()), None)
    if found is None:
      raise DataError(f"{where}: data file {entry!r} not found (looked at "
                      f"{', '.join(str(t) for t in tries)})")
    files.append(found)
  return files


KARPATHY_SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}


def read_karpathy_split(path, split) -> list:
  """The images of one split of a Karpathy split file (dataset_coco.json / dataset_flickr30k.json:
  {'images': [{'split', 'filename', ['filepath', 'cocoid'], 'sentences': [{'raw', 'sentid'}]}]});
  split: 'train' (train + restval), 'validation' (val) or 'test'. Each image as {'image_id' (the
  COCO id, else the file name's stem), 'file' (filepath/filename), 'captions': [(sentid, raw)]}."""
  path = pathlib.Path(path)
  data = _read_coco_json(path, ("images",))
  wanted = KARPATHY_SPLITS[split]
  images = []
  for i, image in enumerate(data["images"]):
    where = f"{path} image {i}"
    if not isinstance(image, dict) or "split" not in image or "filename" not in image:
      raise DataError(f"{where}: expected 'split', 'filename' and 'sentences'")
    if image["split"] not in wanted:
      continue
    image_id = str(image.get("cocoid", pathlib.Path(image["filename"]).stem))
    captions = [(str(c.get("sentid", f"{image_id}-{j}")), str(c.get("raw", "")).strip())
                for j, c in enumerate(image.get("sentences", []))]
    images.append({"image_id": image_id, "captions": [c for c in captions if c[1]],
                   "file": str(pathlib.Path(image.get("filepath", "")) / image["filename"])})
  return images


def _region_pairs(images, features_tsvs, *, feature_dim, skips, what):
  """Pair records: for every TSV row whose image_id is in `images` ({image_id: [fields]}), the
  row's regions with each of its fields dicts (caption, ids, answers, ...). Rows stream: only
  the texts are held. An image with no row is a DataError (or a counted skip) at the end."""
  seen = set()
  for tsv in features_tsvs:
    for record in read_bottom_up_tsv(tsv, feature_dim=feature_dim, skips=skips):
      items = images.get(record["image_id"])
      if items is None or record["image_id"] in seen:
        continue
      seen.add(record["image_id"])
      image = {k: v for k, v in record.items() if k != "class_probs"}
      for fields in items:
        yield dict(image, **fields)
  missing = sorted(set(images) - seen)
  if missing:
    skips.handle(DataError(f"{len(missing)} {what} images have no row in "
                           f"{[str(t) for t in features_tsvs]} (first: {missing[:3]})"))


def karpathy_records(split_file, split, *, features_tsvs=None, image_root=None,
                     feature_dim=None, skips=None):
  """Pair records (one per caption, text in 'caption') of one Karpathy split: with
  features_tsvs, the images' bottom-up regions (rows keyed by the COCO id); with image_root, the
  encoded image file (image_bytes, checked to decode: a bad one is named or counted)."""
  from unimo_jax.data.formats.images import checked_image_bytes
  skips = skips or Skips(False)
  images = read_karpathy_split(split_file, split)
  if features_tsvs is not None:
    texts = {im["image_id"]: [{"caption": raw, "caption_id": sentid}
                              for sentid, raw in im["captions"]] for im in images}
    yield from _region_pairs(texts, features_tsvs, feature_dim=feature_dim, skips=skips,
                             what=f"{split_file} {split}")
    return
  root = pathlib.Path(image_root)
  for image in images:
    file = root / image["file"]
    try:
      data = checked_image_bytes(file, f"{split_file} image {image['image_id']}")
    except DataError as e:
      skips.handle(e)
      continue
    for sentid, raw in image["captions"]:
      yield {"image_id": image["image_id"], "image_bytes": data, "caption": raw,
             "caption_id": sentid}


def vqa_records(questions_json, annotations_json, features_tsvs, *, feature_dim=None,
                skips=None):
  """Pair records of VQA v2 (one per question: the question in 'caption', its id in
  'caption_id', the ten annotators' answers in 'answers', [] without annotations as for
  test-dev) over the images' bottom-up regions (rows keyed by the COCO image id)."""
  skips = skips or Skips(False)
  path = pathlib.Path(questions_json)
  questions = _read_coco_json(path, ("questions",))["questions"]
  answers = {}
  if annotations_json is not None:
    apath = pathlib.Path(annotations_json)
    for i, ann in enumerate(_read_coco_json(apath, ("annotations",))["annotations"]):
      if "question_id" not in ann or not isinstance(ann.get("answers"), list):
        raise DataError(f"{apath} annotation {i}: expected 'question_id' and an 'answers' list")
      answers[ann["question_id"]] = [str(a.get("answer", "")) for a in ann["answers"]]
  by_image = collections.defaultdict(list)
  for i, q in enumerate(questions):
    where = f"{path} question {i}"
    try:
      if not {"image_id", "question", "question_id"} <= set(q):
        raise DataError(f"{where}: expected 'image_id', 'question' and 'question_id'")
      if annotations_json is not None and q["question_id"] not in answers:
        raise DataError(f"{where}: question {q['question_id']} has no annotation in "
                        f"{annotations_json}")
      by_image[str(q["image_id"])].append({
          "caption": str(q["question"]).strip(), "caption_id": str(q["question_id"]),
          "answers": answers.get(q["question_id"], [])})
    except DataError as e:
      skips.handle(e)
  yield from _region_pairs(by_image, features_tsvs, feature_dim=feature_dim, skips=skips,
                           what=str(path))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _captioned_image(file, caption, where, skips):
  from unimo_jax.data.formats.images import checked_image_bytes
  try:
    if not caption.strip():
      raise DataError(f"{where}: expected a non-empty caption for {file}")
    return {"image_id": file.stem, "image_bytes": checked_image_bytes(file, where),
            "caption": caption.strip()}
  except DataError as e:
    skips.handle(e)
    return None


def cc_tsv_records(tsvs, *, skips=None):
  """Pair records from Conceptual-Captions-style TSVs of downloaded images: lines
  'caption\timage file' (the file relative to the TSV's folder; a first line 'caption\t...' is
  a header). Each image is checked to decode: a bad or missing one is named or counted."""
  skips = skips or Skips(False)
  for tsv in tsvs:
    tsv = pathlib.Path(tsv)
    for number, (where, line) in enumerate(_lines(tsv)):
      fields = line.split("\t")
      if not line.strip() or (number == 0 and fields[0].strip().lower() == "caption"):
        continue
      if len(fields) != 2:
        skips.handle(DataError(f"{where}: expected 2 tab-separated fields (caption, image file), "
                               f"found {len(fields)}"))
        continue
      record = _captioned_image(tsv.parent / fields[1].strip(), fields[0], where, skips)
      if record is not None:
        yield record


def cc_folder_records(root, *, skips=None):
  """Pair records from folders of captioned images (img2dataset's 'files' layout): every image
  file with a caption file of the same name ending in .txt beside it, in sorted path order."""
  skips = skips or Skips(False)
  root = pathlib.Path(root)
  for file in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
    text = file.with_suffix(".txt")
    if not text.is_file():
      continue
    record = _captioned_image(file, text.read_text(encoding="utf-8"), str(file), skips)
    if record is not None:
      yield record

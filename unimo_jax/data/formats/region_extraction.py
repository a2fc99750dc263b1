"""Image files -> region-feature shards, through the detector (unimo_jax/detector/).

  image mode  every image file under a folder -> image shards (image_id = its path under the
              folder, without the suffix)
  pair mode   a COCO-format captions JSON ({'images': [{'id', 'file_name'}], 'annotations':
              [{'image_id', 'caption'}]}) over the folder -> pair shards, one record per caption

Records are the layout every reader takes: region_features [n, D] and class_probs [n, C]
float16, boxes [n, 4] float32 in original pixels, image_w, image_h (and attr_probs [n, A] with
attributes=True).

The images are split into shards of `images_per_shard` in a fixed order; process p of P (under
jax.distributed, one per host) extracts shards p, p + P, ... Each shard is written whole (a .tmp
renamed) and then marked done by a small <shard>.done.json holding its counts, so a stopped run
started again skips the finished shards and redoes at most the one in flight. Process 0 writes
metadata.json once every shard is done. A file that will not decode is a DataError naming it,
or with skip_bad is left out and counted (per shard and in the metadata, with its name).
"""

import concurrent.futures
import json
import logging
import pathlib
import time


from unimo_jax.data.formats import records
from unimo_jax.data.formats.images import read_image
from unimo_jax.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DONE_SUFFIX = ".done.json"


def image_files(root) -> list:
  """(image_id, path) of every image file under root, sorted; DataError if there is none."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(f"--images {root}: expected a folder of image files")
  files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
  if not files:
    raise DataError(f"--images {root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
  return [(str(p.relative_to(root).with_suffix("")), p) for p in files]


def captioned_images(captions_json, root, skips) -> list:
  """(image_id, path, [(caption, caption_id)]) of the images a COCO-format JSON captions, in the
  order of its 'images'; bad entries, and captions of images it does not list, go to skips (as
  `coco-images` reads the same JSON)."""
  from unimo_jax.data.formats import converters
  path = pathlib.Path(captions_json)
  data = converters._read_coco_json(path, ("images", "annotations"))
  files = converters.coco_image_files(data["images"], path, root, skips)
  captions = {}
  for ann in converters._captions_of_known_images(
      data["annotations"], path, files, f"which is not one of {path}'s 'images'", skips):
    captions.setdefault(str(ann["image_id"]), []).append(
        (ann["caption"].strip(), str(ann.get("id", ""))))
  items = [(image_id, file, captions[image_id]) for image_id, file in files.items()
           if image_id in captions]
  if not items:
    raise DataError(f"{path}: no image of 'images' has a caption in 'annotations'")
  return items


def _decode(item):
  image_id, path = item[0], item[1]
  try:
    return read_image(path, f"image {image_id!r}"), None
  except DataError as e:
    return None, e


def _region_record(image_id, regions, attributes: bool) -> dict:
  """The extractor's regions of one image (already in the record layout) under its id."""
  record = dict(regions, image_id=image_id)
  if not attributes:
    del record["attr_probs"]
  return record


class _Progress:
  """A line every `every` seconds: images done, rate, ETA."""

  def __init__(self, total, every=10.0):
    self.total, self.every, self.done = total, every, 0
    self.start = self.last = time.monotonic()

  def add(self, count):
    self.done += count
    now = time.monotonic()
    if now - self.last >= self.every or self.done == self.total:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / max(rate, 1e-9)
      print(f"regions: {self.done}/{self.total} images ({rate:.2f} images/s, ETA "
            f"{time.strftime('%H:%M:%S', time.gmtime(eta))})", flush=True)


def region_records(items, extractor, on_bad, *, attributes=False, expand=None, threads=8,
                   progress=None):
  """Records of the items' images through the detector, in item order: one image record per
  item, or expand(item, record) -> the item's records. Files are decoded `threads` at a time; a
  file that does not decode goes to on_bad(item, error), which raises or lets it be skipped."""
  step = 4 * extractor.batch_size
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for start in range(0, len(items), step):
      chunk = items[start:start + step]
      decoded = list(pool.map(_decode, chunk))
      good = []
      for item, (image, error) in zip(chunk, decoded):
        if error is not None:
          on_bad(item, error)
        else:
          good.append((item, image))
      regions = extractor([image for _, image in good]) if good else []
      for (item, _), region in zip(good, regions):
        record = _region_record(item[0], region, attributes)
        yield from (expand(item, record) if expand else [record])
      if progress is not None:
        progress.add(len(chunk))


def _extract_shard(items, extractor, skip_bad, attributes, expand, threads, progress):
  """The records of one shard's items, and the [image_id, error] of files left out."""
  skipped = []

  def on_bad(item, error):
    if not skip_bad:
      raise error
    logging.warning("skipped: %s", error)
    skipped.append([item[0], str(error)])

  out = list(region_records(items, extractor, on_bad, attributes=attributes, expand=expand,
                            threads=threads, progress=progress))
  return out, skipped


def extract_regions(items, out_dir, extractor, *, kind="image", images_per_shard=1000,
                    skip_bad=False, attributes=False, tokenizer=None, process_index=0,
                    process_count=1, threads=8, metadata=None,
                    barrier=lambda: None) -> dict | None:
  """Writes this process's shards of `items` ((image_id, path) for image mode, (image_id, path,
  [(caption, caption_id)]) for pair mode), waits at `barrier` (every process's shards done) and
  on process 0 writes the metadata. Returns the metadata (None on other processes, or when
  shards are still missing)."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  config = extractor.config
  meta = {"format": records.FORMAT, "version": records.VERSION, "kind": kind,
          "feature_dtype": "float16", "region_feature_dim": config.feature_dim,
          "num_classes": config.num_classes, "detector": json.loads(config.to_json()),
          **(metadata or {})}
  if kind == "pair":
    if tokenizer is None:
      raise DataError("regions with --captions: expected --tokenizer for the caption ids")
    meta["vocabulary"] = tokenizer.describe()

  def pair_records(item, record):
    ids = tokenizer.encode_batch([caption for caption, _ in item[2]])
    return [dict(record, caption=caption, caption_id=caption_id, caption_ids=caption_ids)
            for (caption, caption_id), caption_ids in zip(item[2], ids)]

  count = max(1, -(-len(items) // images_per_shard))
  mine = [i for i in range(count) if i % process_count == process_index]
  todo = [i for i in mine if not _done_file(out_dir, kind, i, count).exists()]
  if len(todo) < len(mine):
    print(f"regions: {len(mine) - len(todo)} of this process's {len(mine)} shards are done "
          "already; resuming", flush=True)
  progress = _Progress(sum(len(items[i * images_per_shard:(i + 1) * images_per_shard])
                           for i in todo))
  for i in todo:
    shard_items = items[i * images_per_shard:(i + 1) * images_per_shard]
    shard_records, skipped = _extract_shard(shard_items, extractor, skip_bad, attributes,
                                            pair_records if kind == "pair" else None, threads,
                                            progress)
    name = records.shard_name(kind, i, count)
    written = records.write_shard(out_dir / name, shard_records, kind, meta)
    _done_file(out_dir, kind, i, count).write_text(json.dumps(
        {"file": name, "records": written, "images": len(shard_items) - len(skipped),
         "skipped": skipped}))
  barrier()
  if process_index != 0:
    return None
  return finish_metadata(out_dir, kind, count, meta)


def _done_file(out_dir, kind, index, count):
  return out_dir / (records.shard_name(kind, index, count) + DONE_SUFFIX)


def finish_metadata(out_dir, kind, count, meta) -> dict | None:
  """metadata.json from the shards' done files; None (and a message) while some are missing."""
  out_dir = pathlib.Path(out_dir)
  done = [_done_file(out_dir, kind, i, count) for i in range(count)]
  missing = [f.name for f in done if not f.exists()]
  if missing:
    print(f"regions: {len(missing)} of {count} shards not done yet (first {missing[0]}); run "
          "again (or wait for the other hosts) to finish the metadata", flush=True)
    return None
  shards = [json.loads(f.read_text()) for f in done]
  skipped = [entry for shard in shards for entry in shard["skipped"]]
  meta = dict(meta, num_records=sum(s["records"] for s in shards),
              images=sum(s["images"] for s in shards),
              shards=[{"file": s["file"], "records": s["records"]} for s in shards],
              skipped=len(skipped), skipped_files=skipped[:1000])
  (out_dir / records.METADATA).write_text(json.dumps(meta, indent=2))
  return meta

"""tfds builders for the files the converters read: array_record, no TensorFlow, manual download.

  python -m unimo_jax.data tfds <builder>[/<config>] --manual-dir DIR [--data-dir DIR]

then read anywhere a dataset directory goes as tfds:<builder>[/<config>]@<split>
(data/formats/tfds_source.py). tfds's manual-download convention: the user points manual_dir at files
they already have, in the layout below; nothing is downloaded.

  builder                    configs            manual_dir holds
  unimo_text_corpus          lines, paragraphs  *.txt[.gz]: one document per line, or per
                                                blank-line-separated paragraph
  unimo_bottom_up            regions,           *.tsv[.gz]: bottom-up-attention rows, 6 fields
                             regions_probs      (or 7 with cls_prob, kept by regions_probs)
  unimo_coco_karpathy        regions, pixels    dataset_coco.json (Karpathy's split file) and
                                                *.tsv[.gz] region rows keyed by the COCO id
                                                (regions), or the image files at its
                                                filepath/filename (pixels)
  unimo_flickr30k                               UNIMO's Flickr30k/: flickr30k-textids/{train,
                                                val.all,test.all}.ids, flickr30k-features/
                                                bbox100/{train,dev,test}/*
  unimo_snli_ve                                 UNIMO's SNLI-VE/bbox100/{train,dev,test}_filelist
                                                and the files they list
  unimo_coco_captions                           UNIMO's coco/{train,valid,test}_filelist, the
                                                files they list, coco_object_*.ids (tag_ids)
  unimo_vqa_v2                                  v2_OpenEnded_mscoco_{train2014,val2014,
                                                test2015}_questions.json, v2_mscoco_{train2014,
                                                val2014}_annotations.json, *.tsv[.gz] regions
  unimo_regions              images, pairs      image files (and captions.json, COCO format, for
                                                pairs) through the detector (--detector)
  unimo_cc                   tsv, folders       *.tsv 'caption<TAB>image file', or folders of
                                                image files each with a same-named .txt caption

The UNIMO builders also take manual_dir pointing at UNIMO's data/ folder (holding Flickr30k/,
SNLI-VE/, coco/). Where the text corpus, bottom-up and CC files lie in train/, validation/
(or dev/, valid/) and test/ folders, those are the splits; otherwise everything is 'train'.
Karpathy: train = train + restval, validation = val, test = test.

One path: every builder yields the records of the converters' readers (data/formats/converters.py),
the same ones `python -m unimo_jax.data <format>` writes to shards. Features keep our names;
texts are stored as text (caption, text, answers) and tokenized when read with the run's
tokenizer, so one build serves every vocabulary; UNIMO's files carry model ids (caption_ids,
tag_ids). Region features and class probabilities are float16, as in the shards. Images are
the encoded file bytes (an Image feature read back undecoded as
image_bytes). Metadata: region_feature_dim, num_classes, task, and per split the bad lines
skipped (skip_bad=True), as in the shards' metadata.json.
"""

import abc
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from unimo_jax.data.formats import converters
from unimo_jax.data.formats.records import check_example
from unimo_jax.errors import DataError

F = tfds.features
SPLIT_FOLDERS = {"train": "train", "validation": "validation", "dev": "validation",
                 "valid": "validation", "val": "validation", "test": "test"}


def _text():
  return F.Text()


def _ids():
  return F.Tensor(shape=(None,), dtype=np.int32)


# Region features and class probabilities are stored float16, as the shards store them
# (ShardWriter's feature_dtype): half the bytes to read, the same values in either form.
HALF_FIELDS = ("region_features", "class_probs")


def _matrix():  # [rows, D], D known only from the files
  return F.Tensor(shape=(None, None), dtype=np.float16, encoding=F.Encoding.BYTES)


def region_features(probs=False) -> dict:
  features = {"image_id": _text(), "image_w": F.Scalar(dtype=np.int32),
              "image_h": F.Scalar(dtype=np.int32),
              "boxes": F.Tensor(shape=(None, 4), dtype=np.float32),
              "region_features": _matrix()}
  if probs:
    features["class_probs"] = _matrix()
  return features


def image_file_features() -> dict:
  return {"image_id": _text(), "image_bytes": F.Image()}


def split_files(root, suffixes) -> dict:
  """{split: sorted files ending in one of `suffixes`}: from train/, validation/ (dev/, valid/,
  val/) and test/ folders where there are such, else every file under root is 'train'."""
  root = pathlib.Path(root)
  found = {}
  for folder, split in SPLIT_FOLDERS.items():
    files = _files(root / folder, suffixes)
    if files:
      found.setdefault(split, []).extend(files)
  if not found:
    files = _files(root, suffixes)
    if files:
      found["train"] = files
  if not found:
    raise DataError(f"manual_dir {root}: expected files ending in {' or '.join(suffixes)}, "
                    "found none")
  return found


def _files(root, suffixes):
  if not root.is_dir():
    return []
  return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def _existing(path, what):
  path = pathlib.Path(path)
  if not path.exists():
    raise DataError(f"{path}: expected {what}, not found")
  return path


def _unimo_folder(root, name):
  """UNIMO's <name>/ folder: under manual_dir (UNIMO's data/), or manual_dir itself."""
  root = pathlib.Path(root)
  return root / name if (root / name).is_dir() else root


class _UnimoBuilder(tfds.core.GeneratorBasedBuilder):
  """Records of one of the converters' readers, in array_record, examples in generation order.

  Subclasses give KIND ('text', 'image', 'pair'), TASK (for the metadata), features() (our field
  names -> tfds features) and sources(manual_dir) -> {split: records(skips)}.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  KIND = "pair"
  TASK = None

  def __init__(self, *, skip_bad=False, feature_dim=None, num_classes=None, **kwargs):
    self.skip_bad, self.feature_dim, self.num_classes = skip_bad, feature_dim, num_classes
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Point manual_dir at the files this builder reads, in the "
                                  "layout its docstring and unimo_jax/data/formats/tfds_builders.py give.")

  @abc.abstractmethod
  def features(self) -> dict:
    ...

  @abc.abstractmethod
  def sources(self, manual_dir) -> dict:
    ...

  def _info(self):
    metadata = tfds.core.MetadataDict(kind=self.KIND)
    if self.TASK:
      metadata["task"] = self.TASK
    return tfds.core.DatasetInfo(builder=self, description=(type(self).__doc__ or "").strip(),
                                 features=F.FeaturesDict(self.features()), metadata=metadata,
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    return {split: self._generate_examples(split, records)
            for split, records in self.sources(root).items()}

  def _generate_examples(self, split, records):
    skips = converters.Skips(self.skip_bad)
    names = set(self.features())
    meta = self.info.metadata
    index = -1
    for index, record in enumerate(records(skips)):
      where = f"{self.name} {split} record {index}"
      missing = names - set(record)
      if missing:
        raise DataError(f"{where}: expected the features {sorted(missing)}, found "
                        f"{sorted(record)}")
      record = {name: (np.asarray(record[name], np.float16) if name in HALF_FIELDS
                       else record[name]) for name in names}
      if index == 0:  # the dims every later record must have
        if "region_features" in record:
          meta.setdefault("region_feature_dim", int(np.shape(record["region_features"])[1]))
        if "class_probs" in record:
          meta.setdefault("num_classes", int(np.shape(record["class_probs"])[1]))
      if self.KIND != "text":  # the image part; texts are tokenized when read
        check_example(record, "image", meta, where)
      yield index, record
    if index < 0:
      raise DataError(f"{self.name}: the {split} split has no records")
    meta.setdefault("skipped", {})[split] = skips.count


class UnimoTextCorpus(_UnimoBuilder):
  """Plain-text corpus: *.txt or *.txt.gz files, one document per line (config lines) or per
  paragraph of lines separated by blank lines (config paragraphs). Feature: text."""

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="lines", description="a document per line"),
                     tfds.core.BuilderConfig(name="paragraphs",
                                             description="documents separated by blank lines")]
  KIND = "text"

  def features(self):
    return {"text": _text()}

  def sources(self, manual_dir):
    blank = self.builder_config.name == "paragraphs"
    return {split: (lambda skips, files=files: ({"text": doc} for path in files
                                                 for doc in converters.read_documents(path, blank)))
            for split, files in split_files(manual_dir, (".txt", ".txt.gz")).items()}


class UnimoBottomUp(_UnimoBuilder):
  """Bottom-up-attention region features: *.tsv or *.tsv.gz rows image_id, image_w, image_h,
  num_boxes, boxes, features[, cls_prob] (base64 float32). Config regions_probs needs and keeps
  cls_prob as class_probs."""

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="regions", description="boxes and features"),
                     tfds.core.BuilderConfig(name="regions_probs",
                                             description="also the detector's class_probs")]
  KIND = "image"

  def features(self):
    return region_features(probs=self.builder_config.name == "regions_probs")

  def sources(self, manual_dir):
    probs = self.builder_config.name == "regions_probs"

    def records(skips, files):
      for path in files:
        for record in converters.read_bottom_up_tsv(path, feature_dim=self.feature_dim,
                                                    num_classes=self.num_classes, skips=skips):
          if probs and "class_probs" not in record:
            skips.handle(DataError(f"{path} image {record['image_id']}: expected a cls_prob "
                                   "field (config regions_probs)"))
            continue
          yield record
    return {split: (lambda skips, files=files: records(skips, files))
            for split, files in split_files(manual_dir, (".tsv", ".tsv.gz")).items()}


def _karpathy_file(root):
  names = sorted(pathlib.Path(root).glob("dataset_*.json"))
  if not names:
    raise DataError(f"manual_dir {root}: expected Karpathy's split file dataset_coco.json "
                    "(or another dataset_*.json), found none")
  return names[0]


class UnimoCocoKarpathy(_UnimoBuilder):
  """COCO captions in Karpathy's split: dataset_coco.json with the images' bottom-up regions in
  *.tsv files keyed by the COCO id (config regions) or the image files at the JSON's
  filepath/filename under manual_dir (config pixels). One record per caption: caption (text),
  caption_id (sentid), image_id (cocoid)."""

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="regions", description="region features"),
                     tfds.core.BuilderConfig(name="pixels", description="image files")]

  def features(self):
    image = (region_features() if self.builder_config.name == "regions"
             else image_file_features())
    return dict(image, caption=_text(), caption_id=_text())

  def sources(self, manual_dir):
    split_file = _karpathy_file(manual_dir)
    if self.builder_config.name == "regions":
      tsvs = _files(manual_dir, (".tsv", ".tsv.gz"))
      if not tsvs:
        raise DataError(f"manual_dir {manual_dir}: expected *.tsv region files (config regions)")
      where = {"features_tsvs": tsvs, "feature_dim": self.feature_dim}
    else:
      where = {"image_root": manual_dir}
    return {split: (lambda skips, split=split: converters.karpathy_records(
        split_file, split, skips=skips, **where)) for split in converters.KARPATHY_SPLITS}


class UnimoFlickr30k(_UnimoBuilder):
  """UNIMO's Flickr30k retrieval files: Flickr30k/flickr30k-textids/{train.ids, val.all.ids,
  test.all.ids} (caption ids) over Flickr30k/flickr30k-features/bbox100/{train,dev,test}/*
  (7-field TSVs with probs)."""

  TASK = "flickr30k"

  def features(self):
    return dict(region_features(probs=True), caption_ids=_ids(), caption_id=_text())

  def sources(self, manual_dir):
    root = _unimo_folder(manual_dir, "Flickr30k")
    out = {}
    for split, ids, folder in (("train", "train.ids", "train"),
                               ("validation", "val.all.ids", "dev"),
                               ("test", "test.all.ids", "test")):
      ids_file = _existing(root / "flickr30k-textids" / ids, "UNIMO's Flickr30k caption ids")
      tsvs = sorted(p for p in _existing(root / "flickr30k-features" / "bbox100" / folder,
                                         "UNIMO's Flickr30k features folder").iterdir()
                    if p.is_file())
      out[split] = (lambda skips, ids_file=ids_file, tsvs=tsvs: converters.flickr30k_records(
          ids_file, tsvs, feature_dim=self.feature_dim, num_classes=self.num_classes,
          skips=skips))
    return out


class UnimoSnliVe(_UnimoBuilder):
  """UNIMO's SNLI-VE files: SNLI-VE/bbox100/{train,dev,test}_filelist, each naming ';'-record
  files (14 fields), read through the lists as UNIMO's reader does. Adds label."""

  TASK = "snli_ve"

  def features(self):
    return dict(region_features(), caption_ids=_ids(), caption_id=_text(),
                label=F.Scalar(dtype=np.int32))

  def sources(self, manual_dir):
    root = _unimo_folder(manual_dir, "SNLI-VE")
    data_root = root.parent if root.name == "SNLI-VE" else root
    out = {}
    for split, name in (("train", "train"), ("validation", "dev"), ("test", "test")):
      files = converters.read_filelist(_existing(root / "bbox100" / f"{name}_filelist",
                                                 "UNIMO's SNLI-VE file list"), data_root)
      out[split] = (lambda skips, files=files: converters.snli_ve_records(
          files, feature_dim=self.feature_dim, skips=skips))
    return out


class UnimoCocoCaptions(_UnimoBuilder):
  """UNIMO's COCO captioning files: coco/{train,valid,test}_filelist naming ';'-record files
  (16 fields), with the detector object tags of coco/coco_object_*.ids as tag_ids (the first
  such file in name order; empty tags without one)."""

  TASK = "coco_caption"

  def features(self):
    return dict(region_features(probs=True), caption_ids=_ids(), caption_id=_text(),
                tag_ids=_ids())

  def sources(self, manual_dir):
    root = _unimo_folder(manual_dir, "coco")
    data_root = root.parent if root.name == "coco" else root
    objects = sorted(root.glob("coco_object_*.ids"))
    out = {}
    for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
      files = converters.read_filelist(_existing(root / f"{name}_filelist",
                                                 "UNIMO's COCO file list"), data_root)
      out[split] = (lambda skips, files=files: (
          dict(record, tag_ids=record.get("tag_ids", np.zeros(0, np.int32)))
          for record in converters.coco_unimo_records(
              files, feature_dim=self.feature_dim, num_classes=self.num_classes,
              objects=objects[0] if objects else None, skips=skips)))
    return out


VQA_FILES = {"train": ("v2_OpenEnded_mscoco_train2014_questions.json",
                       "v2_mscoco_train2014_annotations.json"),
             "validation": ("v2_OpenEnded_mscoco_val2014_questions.json",
                            "v2_mscoco_val2014_annotations.json"),
             "test": ("v2_OpenEnded_mscoco_test2015_questions.json", None)}


class UnimoVqaV2(_UnimoBuilder):
  """VQA v2: the questions and annotations JSONs of train2014 and val2014 (test2015 questions
  too where present: no answers) over the images' bottom-up regions in *.tsv files keyed by the
  COCO image id. One record per question: caption (the question), caption_id (question_id),
  answers (the ten annotators' answers)."""

  TASK = "vqa"

  def features(self):
    return dict(region_features(), caption=_text(), caption_id=_text(),
                answers=F.Sequence(_text()))

  def sources(self, manual_dir):
    tsvs = _files(manual_dir, (".tsv", ".tsv.gz"))
    if not tsvs:
      raise DataError(f"manual_dir {manual_dir}: expected *.tsv region files, found none")
    out = {}
    for split, (questions, annotations) in VQA_FILES.items():
      if split == "test" and not (manual_dir / questions).exists():
        continue
      q = _existing(manual_dir / questions, "VQA v2 questions")
      a = _existing(manual_dir / annotations, "VQA v2 annotations") if annotations else None
      out[split] = (lambda skips, q=q, a=a: converters.vqa_records(
          q, a, tsvs, feature_dim=self.feature_dim, skips=skips))
    return out


class UnimoCc(_UnimoBuilder):
  """Conceptual-Captions-style captioned images (pixel mode): *.tsv files of lines
  'caption<TAB>image file' relative to the TSV (config tsv), or folders of image files with a
  same-named .txt caption beside each, as img2dataset writes them (config folders)."""

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="tsv", description="caption TSVs"),
                     tfds.core.BuilderConfig(name="folders", description="image + .txt files")]

  def features(self):
    return dict(image_file_features(), caption=_text())

  def sources(self, manual_dir):
    if self.builder_config.name == "tsv":
      return {split: (lambda skips, files=files: converters.cc_tsv_records(files, skips=skips))
              for split, files in split_files(manual_dir, (".tsv",)).items()}
    folders = {}
    for folder, split in SPLIT_FOLDERS.items():
      if (manual_dir / folder).is_dir():
        folders.setdefault(split, []).append(manual_dir / folder)
    folders = folders or {"train": [manual_dir]}
    return {split: (lambda skips, roots=roots: (r for root in roots for r in
                                                converters.cc_folder_records(root, skips=skips)))
            for split, roots in folders.items()}


class UnimoRegions(_UnimoBuilder):
  """Image files through the bottom-up-attention detector (needs --detector): every image file
  under manual_dir as an image record (config images), or manual_dir/captions.json (COCO
  format) over the files there, one pair record per caption (config pairs). The records of
  `python -m unimo_jax.data regions`, with class_probs."""

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="images", description="image records"),
                     tfds.core.BuilderConfig(name="pairs", description="captioned images")]

  def __init__(self, *, detector=None, **kwargs):
    self.detector = detector
    super().__init__(**kwargs)

  @property
  def KIND(self):  # noqa: N802 (the base class's name for it)
    return "image" if self.builder_config.name == "images" else "pair"

  def features(self):
    features = region_features(probs=True)
    return dict(features, caption=_text()) if self.KIND == "pair" else features

  def sources(self, manual_dir):
    from unimo_jax.data.formats import region_extraction
    from unimo_jax.detector.extractor import Extractor
    if not self.detector:
      raise DataError(f"{self.name}: expected --detector, a detector checkpoint (python -m "
                      "unimo_jax.convert detector)")
    extractor = Extractor.load(self.detector)

    def records(skips):
      on_bad = lambda item, error: skips.handle(error)
      if self.KIND == "image":
        items = region_extraction.image_files(manual_dir)
        return region_extraction.region_records(items, extractor, on_bad)
      items = region_extraction.captioned_images(
          _existing(manual_dir / "captions.json", "a COCO-format captions JSON"), manual_dir,
          skips)
      expand = lambda item, record: [dict(record, caption=caption) for caption, _ in item[2]]
      return region_extraction.region_records(items, extractor, on_bad, expand=expand)

    return {"train": records}


BUILDERS = {b.name: b for b in (UnimoTextCorpus, UnimoBottomUp, UnimoCocoKarpathy,
                                 UnimoFlickr30k, UnimoSnliVe, UnimoCocoCaptions, UnimoVqaV2,
                                 UnimoCc, UnimoRegions)}


def build(name, manual_dir, data_dir, **kwargs):
  """Prepares builder `name` ('<builder>[/<config>]') from manual_dir into data_dir; returns
  the builder (its info has the splits and counts)."""
  builder_name, _, config = name.partition("/")
  if builder_name not in BUILDERS:
    raise DataError(f"tfds builder {builder_name!r}: expected one of {sorted(BUILDERS)}")
  cls = BUILDERS[builder_name]
  configs = [c.name for c in (cls.BUILDER_CONFIGS or [])]
  if configs and config not in configs:
    raise DataError(f"tfds builder {builder_name!r}: expected a config, one of "
                    f"{configs} ({builder_name}/<config>), found {config or 'none'!r}")
  if not configs and config:
    raise DataError(f"tfds builder {builder_name!r} has no configs, found {config!r}")
  manual_dir = pathlib.Path(manual_dir)
  if not manual_dir.is_dir():
    raise DataError(f"--manual-dir {manual_dir}: expected a folder of the files to read")
  builder = cls(data_dir=str(data_dir), config=config or None, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder

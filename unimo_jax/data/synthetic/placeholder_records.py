"""Records of the largest shapes a config allows, for compile-only runs that read no data. The
real transforms turn them into examples, so a batch spec built from them has exactly the shapes
and dtypes the pipeline produces (only the values are meaningless).

Region features are float32, the widest dtype a shard may store (converted shards keep float16),
so batch bytes are an upper bound.
"""

import numpy as np

TOKEN = 5  # an ordinary token id: above the specials of every supported vocabulary


def text_ids(length: int) -> np.ndarray:
  return np.full(int(length), TOKEN, np.int32)


def image_record(data_cfg, model_cfg) -> dict:
  """data.max_regions boxes of model.region_feature_dim features, or an image of model size."""
  if data_cfg.image_input == "pixels":
    s = model_cfg.image_size
    return {"pixels": np.zeros((s, s, model_cfg.image_channels), np.uint8), "image_id": "0"}
  n, w, h = int(data_cfg.max_regions), 640.0, 480.0
  boxes = np.tile(np.array([[0.0, 0.0, w / 2, h / 2]], np.float32), (n, 1))
  probs = np.full((n, model_cfg.num_region_classes), 1.0 / model_cfg.num_region_classes,
                  np.float32)
  return {"region_features": np.zeros((n, model_cfg.region_feature_dim), np.float32),
          "boxes": boxes, "image_w": w, "image_h": h, "class_probs": probs, "image_id": "0"}


def pair_record(data_cfg, model_cfg) -> dict:
  """An image with a full-length caption, every CMCL extra, and the task fields (tags, label,
  annotator answers) that fine-tuning readers look for."""
  caption = text_ids(data_cfg.max_caption_length)
  extras = max(int(data_cfg.cmcl_extra_positives), int(data_cfg.cmcl_hard_negatives), 1)
  return dict(image_record(data_cfg, model_cfg), caption_ids=caption, caption="",
              paraphrase_ids=[caption] * extras, hard_negative_ids=[caption] * extras,
              retrieved_text_ids=[], retrieved_images=np.zeros(1, np.int64),
              tag_ids=text_ids(data_cfg.get("max_tags", 0)), label=0,
              answers=["answer 0"] * 10)


def text_record(data_cfg) -> dict:
  return {"input_ids": text_ids(data_cfg.max_text_length)}

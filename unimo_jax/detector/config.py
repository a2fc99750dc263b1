"""The detector's configuration: the original's test-time constants, and widths for small tests.

The defaults are the released 10-100 box model (resnet101_faster_rcnn_final.caffemodel run with
experiments/cfgs/faster_rcnn_end2end_resnet.yml; lib/fast_rcnn/config.py TEST.* values). Tests
narrow `stem_width` and `blocks` to run the same code on CPU in seconds.
"""

import dataclasses
import json

# BGR, subtracted before resizing, no std division (lib/fast_rcnn/config.py PIXEL_MEANS).
CAFFE_PIXEL_MEANS = (102.9801, 115.9465, 122.7717)


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  # network (test.prototxt)
  stem_width: int = 64                 # conv1 channels; stage widths scale with it
  blocks: tuple = (3, 4, 23, 3)        # res2, res3, res4, res5 bottleneck blocks (ResNet-101)
  rpn_channels: int = 512              # rpn_conv/3x3
  num_classes: int = 1601              # cls_score, background at index 0
  num_attributes: int = 401            # attr_score, "no attribute" at index 0
  class_embedding: int = 256           # cls_embedding
  attribute_hidden: int = 512          # fc_attr
  pooled_size: int = 14                # roi_pool5
  feature_stride: int = 16
  anchor_scales: tuple = (4, 8, 16, 32)
  anchor_ratios: tuple = (0.5, 1.0, 2.0)
  # proposals (config.py TEST.RPN_*)
  pre_nms_top_n: int = 6000
  post_nms_top_n: int = 300
  rpn_nms: float = 0.7
  rpn_min_size: int = 16
  # feature selection (tools/generate_tsv.py)
  class_nms: float = 0.3
  conf_thresh: float = 0.2
  min_boxes: int = 10
  max_boxes: int = 100
  # input (config.py TEST.SCALES, TEST.MAX_SIZE)
  short_side: int = 600
  max_side: int = 1000
  pixel_means: tuple = CAFFE_PIXEL_MEANS
  # padded input sizes (height, width): an image goes to the smallest bucket that holds it, so
  # one compiled program per bucket serves every image size
  buckets: tuple = ((600, 600), (600, 800), (800, 600), (600, 1000), (1000, 600))

  @property
  def num_anchors(self) -> int:
    return len(self.anchor_scales) * len(self.anchor_ratios)

  @property
  def feature_dim(self) -> int:
    """Width of the pooled region feature (res5's output: 2048 for ResNet-101)."""
    return self.stem_width * 32

  def stage_widths(self, stage: int) -> tuple:
    """(bottleneck, output) channels of res<stage>, stage in 2..5."""
    inner = self.stem_width * 2 ** (stage - 2)
    return inner, inner * 4

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1)

  @classmethod
  def from_dict(cls, fields: dict) -> "DetectorConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      from unimo_jax.errors import ConfigError
      raise ConfigError(f"detector config: unknown fields {unknown}; expected some of "
                        f"{sorted(known)}")
    return cls(**{k: tuple(map(_tuple, v)) if k == "buckets" else _tuple(v)
                  for k, v in fields.items()})


def _tuple(value):
  return tuple(value) if isinstance(value, list) else value

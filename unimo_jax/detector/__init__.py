"""The bottom-up-attention region detector (Anderson et al., CVPR 2018) in JAX, inference only.

It turns an image into the region features UNIMO reads: up to 100 regions with their 2048-d
pooled features, boxes in image pixels and the 1,601-way class distribution (background first).
The network is the original Caffe test-time graph (peteanderson80/bottom-up-attention,
models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt) and the selection is its
tools/generate_tsv.py rule; docs/detector.md says what each file follows.

  config.py      DetectorConfig: widths, depths, anchors, thresholds, size buckets
  anchors.py     the Caffe anchor set and its grid
  boxes.py       box decoding, clipping and IoU with the Caffe "+1" widths
  nms.py         greedy NMS with static shapes (one box per loop step), single and per class
  backbone.py    ResNet-101 C4 with folded batch norm, the RPN head, the res5 box head
  roi_pool.py    Caffe RoIPool (max, round-half-away bins)
  network.py     one padded image -> proposals -> pooled features and class / attribute probs
  selection.py   generate_tsv.py's rule: per-class NMS 0.3, confidence 0.2, 10 to 100 boxes
  preprocess.py  file -> BGR, mean subtraction, OpenCV's bilinear resize, padding to a bucket
  extractor.py   the host side: load a converted checkpoint, batch images by bucket, run jit
  params.py      random parameters in the converted layout (tests, benchmarks, compile reports)
"""

"""COCO caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (the coco-caption
`Cider` scorer, which is CIDEr-D) and SPICE.

Captions are tokenised with the Stanford PTB tokenizer (Java), as the COCO evaluation server does.
METEOR and the PTB tokenizer need `java` on PATH; SPICE also needs the Stanford CoreNLP 3.6.0 jars
that pycocoevalcap downloads on first use. What is missing is reported in `unavailable` with the
reason, never as a zero score. Without Java, captions are lower-cased and split on whitespace
after stripping punctuation (close to PTB on plain captions).
"""

import pathlib
import re
import shutil

_PUNCT = re.compile(r"[^\w\s']")


def _simple_tokenize(captions: dict) -> dict:
  return {k: [" ".join(_PUNCT.sub(" ", c.lower()).split()) for c in v] for k, v in captions.items()}


def spice_available() -> tuple:
  """(available, reason)."""
  if shutil.which("java") is None:
    return False, "java not found on PATH"
  import pycocoevalcap.spice.spice as spice
  lib = pathlib.Path(spice.__file__).parent / "lib"
  needed = ["stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"]
  missing = [n for n in needed if not (lib / n).exists()]
  if missing:
    return False, f"SPICE needs {missing} in {lib} (run pycocoevalcap's get_stanford_models online)"
  return True, ""


def caption_metrics(predictions: dict, references: dict, *, spice: bool = True) -> dict:
  """predictions {id: caption}; references {id: [caption, ...]} -> {metric: score} on the COCO
  scale (fractions; CIDEr-D around 1 for good captions), plus 'unavailable': {metric: reason}."""
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  from pycocoevalcap.rouge.rouge import Rouge
  if not predictions:
    raise ValueError("caption metrics: expected at least one prediction, found none")
  missing = sorted(set(predictions) - set(references), key=str)
  if missing:
    raise ValueError(f"caption metrics: predictions for ids without references: {missing[:5]}")
  if any(not references[k] for k in predictions):
    raise ValueError("caption metrics: every predicted id needs at least one reference caption")
  gts = {k: list(references[k]) for k in predictions}
  res = {k: [predictions[k]] for k in predictions}
  java = shutil.which("java") is not None
  unavailable = {}
  if java:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    res = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in res.items()})
  else:
    gts, res = _simple_tokenize(gts), _simple_tokenize(res)
    unavailable["METEOR"] = "java not found on PATH"
  out = {}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
  if java:
    from pycocoevalcap.meteor.meteor import Meteor
    out["METEOR"] = float(Meteor().compute_score(gts, res)[0])
  out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
  out["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
  if spice:
    ok, reason = spice_available()
    if ok:
      from pycocoevalcap.spice.spice import Spice
      out["SPICE"] = float(Spice().compute_score(gts, res)[0])
    else:
      unavailable["SPICE"] = reason
  out["unavailable"] = unavailable
  return out

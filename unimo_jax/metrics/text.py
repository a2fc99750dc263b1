"""Generation metrics for text seq2seq: ROUGE-1/2/L F1 (rouge-score, stemmed, x100) and corpus
BLEU-4 (pycocoevalcap's BLEU on lower-cased whitespace tokens, x100)."""


def rouge_scores(predictions, references) -> dict:
  """predictions [str]; references [str] or [[str]] (the best-scoring reference counts)."""
  from rouge_score import rouge_scorer
  _check_lengths(predictions, references)
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
  totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
  for pred, refs in zip(predictions, references):
    refs = [refs] if isinstance(refs, str) else list(refs)
    scores = scorer.score_multi(refs, pred)
    for key in totals:
      totals[key] += scores[key].fmeasure
  return {f"ROUGE-{key[5:]}": 100.0 * v / len(predictions) for key, v in totals.items()}


def bleu4(predictions, references) -> float:
  from pycocoevalcap.bleu.bleu import Bleu
  _check_lengths(predictions, references)
  res = {i: [" ".join(p.lower().split())] for i, p in enumerate(predictions)}
  gts = {i: [" ".join(r.lower().split()) for r in ([refs] if isinstance(refs, str) else refs)]
         for i, refs in enumerate(references)}
  scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
  return 100.0 * float(scores[3])


def _check_lengths(predictions, references):
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"text metrics: expected one reference entry per prediction and at least one "
                     f"prediction, found {len(predictions)} predictions and {len(references)} "
                     "references")

"""GLUE-style metrics: accuracy, Matthews correlation (CoLA), Pearson / Spearman (STS-B)."""

import warnings

import numpy as np


def classification_metrics(labels, predictions) -> dict:
  from sklearn.metrics import f1_score, matthews_corrcoef
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  if labels.shape != predictions.shape or labels.size == 0:
    raise ValueError(f"classification metrics: expected equal non-empty label and prediction "
                     f"arrays, found {list(labels.shape)} and {list(predictions.shape)}")
  with warnings.catch_warnings():  # one class only: MCC is 0 by definition, sklearn warns
    warnings.simplefilter("ignore", UserWarning)
    matthews = float(matthews_corrcoef(labels, predictions))
  out = {"accuracy": float(np.mean(labels == predictions)), "matthews": matthews}
  if set(np.unique(labels)) <= {0, 1}:
    out["f1"] = float(f1_score(labels, predictions, zero_division=0.0))
  return out


def regression_metrics(labels, predictions) -> dict:
  from scipy.stats import pearsonr, spearmanr
  labels = np.asarray(labels, np.float64)
  predictions = np.asarray(predictions, np.float64)
  if labels.shape != predictions.shape or labels.size < 2:
    raise ValueError(f"regression metrics: expected equal label and prediction arrays of at least "
                     f"2 values, found {list(labels.shape)} and {list(predictions.shape)}")
  return {"pearson": float(pearsonr(labels, predictions)[0]),
          "spearman": float(spearmanr(labels, predictions)[0]),
          "mse": float(np.mean((labels - predictions) ** 2))}

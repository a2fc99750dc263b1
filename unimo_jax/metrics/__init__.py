"""Task metrics: wrappers over the community's scorers (pycocoevalcap, rouge-score, scikit-learn,
scipy) plus the official VQA accuracy and recall@K."""

#!/usr/bin/env python3
"""Reference scores for the fraud anomaly model (actors/src/fraud/anomaly).

For each data set NAME in DIR (written by tests/fraud_ref.rs):

  NAME.csv         rows, one per line, comma-separated features
  NAME.labels.csv  1 for a planted outlier, 0 for an inlier
  NAME.ours.csv    our forest's scores, one column per seed

fits scikit-learn's IsolationForest(n_estimators=100, max_samples=256, random_state=0)
on the rows and writes

  NAME.sklearn.csv   its anomaly scores, -score_samples(rows), one per line
  NAME.metrics.json  roc_auc_score of its scores and of each of our columns against the
                     labels, and scipy's Spearman correlation of each of our columns with
                     its scores: tests/fraud_ref.rs checks that its own AUC and Spearman
                     give the same numbers, then applies the tolerances.

Usage: .venv/bin/python scripts/fraud_ref.py DIR NAME...
"""

import json
import os
import sys
import warnings

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

N_ESTIMATORS = 100
MAX_SAMPLES = 256
RANDOM_STATE = 0


def reference(directory, name):
    path = lambda suffix: os.path.join(directory, name + suffix)
    rows = np.loadtxt(path(".csv"), delimiter=",", ndmin=2)
    labels = np.loadtxt(path(".labels.csv"), delimiter=",", ndmin=1).astype(bool)
    ours = np.loadtxt(path(".ours.csv"), delimiter=",", ndmin=2)
    assert rows.shape[0] == labels.shape[0] == ours.shape[0], (rows.shape, labels.shape, ours.shape)
    with warnings.catch_warnings():
        # A set smaller than max_samples: scikit-learn warns and uses every row, as we do.
        warnings.simplefilter("ignore", UserWarning)
        forest = IsolationForest(
            n_estimators=N_ESTIMATORS, max_samples=MAX_SAMPLES, random_state=RANDOM_STATE
        ).fit(rows)
    scores = -forest.score_samples(rows)
    with open(path(".sklearn.csv"), "w") as f:
        f.writelines(f"{s!r}\n" for s in scores.tolist())
    metrics = {
        "auc_sklearn": roc_auc_score(labels, scores),
        "ours": [
            {
                "auc": roc_auc_score(labels, ours[:, k]),
                "spearman": float(spearmanr(ours[:, k], scores).statistic),
            }
            for k in range(ours.shape[1])
        ],
    }
    with open(path(".metrics.json"), "w") as f:
        json.dump(metrics, f)
    print(
        f"{name}: {rows.shape[0]} rows x {rows.shape[1]}, {labels.sum()} outliers, "
        f"scikit-learn AUC {metrics['auc_sklearn']:.4f}, "
        f"max_samples_ {forest.max_samples_}"
    )


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for name in sys.argv[2:]:
        reference(sys.argv[1], name)


if __name__ == "__main__":
    main()

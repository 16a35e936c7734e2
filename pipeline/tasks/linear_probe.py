"""The linear probe (DOMAIN.md §2.1): logistic regression on frozen features.

scikit-learn only, no torch: the classification floor runs the same probe on image statistics and its stage
starts without torch.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe_proba(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    num_classes: int,
    inverse_regularisation: float = 1.0,
    max_iter: int = 2000,
) -> np.ndarray:
    """Logistic regression on standardised frozen features; (Q, num_classes) probabilities.

    Classes absent from the (small) labelled subset get probability 0, so every protocol reports
    probabilities over the same class list.
    """
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=inverse_regularisation, max_iter=max_iter)
    )
    model.fit(train_features, train_labels)
    proba = np.zeros((len(query_features), num_classes))
    proba[:, model.classes_] = model.predict_proba(query_features)
    return proba

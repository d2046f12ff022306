"""A bag-of-words sanity baseline: are a task's labels learnable, and not trivially so?

TF-IDF of word unigrams and bigrams (fit on the training texts), logistic regression with
``C`` chosen on validation AUC, test AUC on the same group-wise split the probes use
(:func:`saelib.probing.probes.group_split`). Tokens are runs of word characters or single
punctuation marks, so code and scripts without spaces still give features.
"""

from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from saelib.probing.probes import DEFAULT_CS, fit_best_c, group_split
from saelib.probing.tasks.load import ProbingTask


def bow_baseline(task: ProbingTask, Cs=DEFAULT_CS, seed: int = 0) -> dict[str, float]:
    """``{"val_auc", "test_auc", "C"}`` of TF-IDF + logistic regression on ``task``."""
    train, val, test = group_split(task.labels, task.groups, seed=seed)
    vec = TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=r"\w+|[^\w\s]"
    )
    texts = task.texts
    x_tr = vec.fit_transform([texts[i] for i in train])
    x_val = vec.transform([texts[i] for i in val])
    x_te = vec.transform([texts[i] for i in test])
    y = task.labels

    def make(C):
        return LogisticRegression(C=C, max_iter=2000, random_state=seed)

    model, C, auc = fit_best_c(make, x_tr, y[train], x_val, y[val], Cs)
    test_auc = roc_auc_score(y[test], model.decision_function(x_te))
    return {"val_auc": float(auc), "test_auc": float(test_auc), "C": float(C)}

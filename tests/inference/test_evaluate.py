"""Metrics against values worked out by hand."""
import pytest
import torch

from convnet.inference.evaluate import Evaluation


def _evaluation(labels, preds, k=3):
    probs = torch.full((len(preds), k), 0.1)
    probs[torch.arange(len(preds)), torch.tensor(preds)] = 0.8
    return Evaluation(tuple("abc"[:k]), torch.tensor(labels), probs)


def test_confusion_and_per_class_metrics_by_hand():
    # true:  a a a b b c
    # pred:  a a b b c c
    ev = _evaluation([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2])
    assert ev.confusion().tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert ev.accuracy == pytest.approx(4 / 6)
    m = ev.per_class()
    # a: tp 2, predicted 2, actual 3 -> P 1, R 2/3, F1 0.8
    assert (m["a"]["precision"] == pytest.approx(1.0) and m["a"]["recall"] == pytest.approx(2 / 3)
            and m["a"]["f1"] == pytest.approx(0.8))
    # b: tp 1, predicted 2, actual 2 -> P 0.5, R 0.5, F1 0.5
    assert (m["b"]["precision"], m["b"]["recall"], m["b"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    # c: tp 1, predicted 2, actual 1 -> P 0.5, R 1, F1 2/3
    assert (m["c"]["precision"], m["c"]["recall"], m["c"]["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert [m[c]["support"] for c in "abc"] == [3, 2, 1]


def test_a_class_never_predicted_scores_zero_not_nan():
    ev = _evaluation([0, 1, 2], [0, 0, 0])
    assert ev.per_class()["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_most_confident_mistakes_come_first():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.05, 0.95], [0.6, 0.4]])
    ev = Evaluation(("x", "y"), torch.tensor([0, 0, 0, 1]), probs)
    assert ev.most_confident_mistakes(5).tolist() == [2, 1, 3]

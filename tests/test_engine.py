"""The continuous batch: each row gets the tokens it would get alone (and from transformers' `generate`), rows leave
at their own end, prompts join as slots free, groups take turns."""

from __future__ import annotations

import pytest
import torch

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.constraints import rule_for
from shoptune.evaluate.engine import Request
from shoptune.schema import read_examples
from tests.helpers.families import build_family_model
from tests.helpers.tiny_model import DEV_SET, build_tiny_model

DEV = read_examples(DEV_SET)


@pytest.fixture(scope="module", params=["llama", "gemma"])
def backend(request, tmp_path_factory) -> HFBackend:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "llama":
        return HFBackend(str(build_tiny_model(folder, digit_boost=3.0, seed=5)))
    return HFBackend(str(build_family_model("gemma", folder)))


def requests_for(backend: HFBackend, constrained: bool) -> list[Request]:
    out = []
    for k, ex in enumerate(DEV[:40]):
        ids = backend.tokenize([backend.render(ex.input_field)])[0]
        rule = rule_for(backend.tokenizer, ex.task_type, ex.input_field) if constrained else None
        out.append(Request(ids, budget=1 + k % 13, rule=rule))
    return out


@pytest.mark.parametrize("constrained", [False, True])
def test_each_row_gets_in_a_continuous_batch_the_tokens_it_gets_alone(backend, constrained):
    alone = [list(r.new) for r in _in_order(backend, constrained, width=1)]
    batched = [list(r.new) for r in _in_order(backend, constrained, width=5)]
    assert batched == alone
    assert len({len(r) for r in batched}) > 3  # rows of many lengths ran together


def _in_order(backend: HFBackend, constrained: bool, width: int) -> list[Request]:
    backend.width = width
    requests = requests_for(backend, constrained)
    finished = list(backend.engine.run(requests))
    assert sorted(map(id, finished)) == sorted(map(id, requests))  # every request ends, once
    return requests


def test_greedy_answers_are_those_generate_gives(backend):
    backend.width = 4
    requests = requests_for(backend, constrained=False)[:8]
    list(backend.engine.run(requests))
    for request in requests:
        ids = torch.tensor([request.ids])
        with torch.inference_mode():
            out = backend.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=request.budget,
                do_sample=False,
                pad_token_id=backend.tokenizer.pad_token_id,
            )
        generated = out[0, ids.shape[1] :].tolist()
        ends = [i for i, t in enumerate(generated) if t in backend.engine.stops]
        assert request.new == generated[: ends[0]] if ends else request.new == generated


def test_rows_leave_at_their_own_end_and_groups_take_turns(backend):
    backend.width = 2
    engine = backend.engine
    ids = backend.tokenize([backend.render(DEV[0].input_field)])[0]
    big = [Request(ids, budget=6, group="big") for _ in range(4)]
    small = Request(ids, budget=2, group="small")
    gone = Request(ids, budget=50, group="gone", cancelled=lambda: True)
    for request in (*big, small, gone):
        engine.submit(request)
    order = []
    while engine.busy():
        order += engine.step()
    assert gone.finish == "cancelled" and gone.new == []
    assert all(r.finish in ("length", "stop") and len(r.new) <= r.budget for r in (*big, small))
    # The small request joined in the first round beside the large one's first prompt, not after all four.
    assert order.index(small) < order.index(big[1])

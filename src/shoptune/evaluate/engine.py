"""Continuous batching: one decoding loop in which a row leaves the batch when its answer ends and a waiting prompt
takes its place. Evaluation and `serve` both answer through it.

transformers' `generate` keeps finished rows in the batch to the longest answer's end and grows its KV cache by
concatenation at every step (a copy of the whole cache per layer per step: on a CPU a third of a step's time at 16
rows). transformers' own continuous batching targets GPUs (paged attention, CUDA graphs); on a CPU it measured
about twice as slow as answering one prompt at a time. So the loop is shoptune's, over the model's own forward:

- **Slots.** Each running row owns a slot of a preallocated key/value buffer per layer; a step writes its new key and
  value in place at the row's own length (no concatenation). Running rows are kept in the first slots, so a step
  reads plain views of the buffers, as long as the longest running row.
- **Masks and positions per row.** A step passes each row's own position and a 4D mask of the positions it has
  filled, so rows of any lengths decode together with exactly the positions they would have alone.
- **Prefill beside decoding.** Prompts join as slots free, prefilled in groups of similar length (the backend's
  shared-prefix cache and padding-aware cuts), then copied into their slots.
- **Rows leave when they end**: at the end-of-sequence token, at their own token budget, or when a constraint
  allows nothing else; a cancelled row (a client gone) leaves at the next step.

Greedy decoding gives each row the tokens `generate` gives it; constrained rows take the allowed tokens of
`evaluate.constraints` at every step.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# Next tokens a constrained row may take, given what it has generated (None: any).
Rule = Callable[[list[int]], list[int] | None]


@dataclass(eq=False)
class Request:
    """One prompt to continue. `ids` are its tokens as rendered for the model."""

    ids: list[int]
    budget: int  # new tokens at most
    temperature: float = 0.0
    rule: Rule | None = None
    group: Any = None  # requests of one group take turns with other groups' to join (a server's clients)
    on_tokens: Callable[[Request], None] | None = None  # after each step that gave this request tokens
    cancelled: Callable[[], bool] | None = None
    new: list[int] = field(default_factory=list)  # the tokens generated so far (the end token excluded)
    finish: str | None = None  # "stop" (an end token, or a constraint complete), "length", "cancelled"

    @property
    def done(self) -> bool:
        return self.finish is not None


class SlotCache:
    """Key/value buffers of every layer, one slot per running row; the model's attention writes through `update`."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.step_rows: Any = None  # for the step under way: row indices, their write positions, the width read
        self.step_positions: Any = None
        self.width = 0

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def reserve(self, torch: Any, like: Sequence[tuple[Any, Any]], slots: int, length: int) -> None:
        """Buffers for at least `slots` rows of `length` positions, shaped like the layers of `like` (the cache of a
        prefill: the model's own number of key/value heads and head size); what is held is kept."""
        if self.keys and self.slots >= slots and self.length >= length:
            return
        slots, length = max(slots, self.slots), max(length, self.length)
        keys, values = [], []
        for layer, (key, value) in enumerate(like):
            shape = (slots, key.shape[1], length, key.shape[3])
            new_k = torch.zeros(shape, dtype=key.dtype, device=key.device)
            new_v = torch.zeros((*shape[:3], value.shape[3]), dtype=value.dtype, device=value.device)
            if self.keys:
                held_slots, held_length = self.slots, self.length
                new_k[:held_slots, :, :held_length] = self.keys[layer]
                new_v[:held_slots, :, :held_length] = self.values[layer]
            keys.append(new_k)
            values.append(new_v)
        self.keys, self.values = keys, values

    def place(self, slot: int, layers: Iterable[tuple[Any, Any]], keep: Any) -> None:
        """A prefilled row into `slot`: of its cached positions, those `keep` marks (its real tokens)."""
        for layer, (key, value) in enumerate(layers):
            count = int(keep.sum())
            self.keys[layer][slot, :, :count] = key[:, keep]
            self.values[layer][slot, :, :count] = value[:, keep]

    def move(self, source: int, target: int, length: int) -> None:
        for layer in range(len(self.keys)):
            self.keys[layer][target, :, :length] = self.keys[layer][source, :, :length]
            self.values[layer][target, :, :length] = self.values[layer][source, :, :length]

    # --- what the model's attention calls during a step ---

    def update(self, key: Any, value: Any, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        rows, positions = self.step_rows, self.step_positions
        self.keys[layer_idx][rows, :, positions] = key[:, :, 0]
        self.values[layer_idx][rows, :, positions] = value[:, :, 0]
        count = key.shape[0]
        return self.keys[layer_idx][:count, :, : self.width], self.values[layer_idx][:count, :, : self.width]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width


class Engine:
    """Continuous batching over one model (an `HFBackend`'s), `width` rows decoding at once."""

    def __init__(self, backend: Any, width: int) -> None:
        import torch

        self.torch, self.backend, self.width = torch, backend, width
        # Waiting prompts join once this many slots are free: a few at a time prefill better together (a batch run
        # of questions); a server sets 1, so that a request never waits for others' answers to end.
        self.join_at = max(1, width // 4)
        self.model, self.device = backend.model, backend.device
        self.cache = SlotCache()
        self.running: list[Request] = []  # running[i] is in slot i
        self.lengths: list[int] = []  # positions filled, per running row
        self.waiting: deque[Request] = deque()
        self.stops = stop_tokens(backend.model, backend.tokenizer)
        self.context = backend.context_length()

    def submit(self, request: Request) -> None:
        room = self.context - len(request.ids) if self.context is not None else request.budget
        request.budget = max(0, min(request.budget, room))  # the budget gives way, never the prompt
        if request.budget == 0:
            request.finish = "length"
        else:
            self.waiting.append(request)

    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def run(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Every request answered, each yielded as it ends (requests that can take no token at once)."""
        for request in requests:
            self.submit(request)
            if request.done:
                yield request
        while self.busy():
            yield from self.step()

    def step(self) -> list[Request]:
        """Admit waiting prompts into free slots (when enough are free), then one decoding step; the requests that
        ended in it."""
        with self.torch.inference_mode():  # the buffers are written in place, step after step
            ended = self._drop_cancelled()
            free = self.width - len(self.running)
            if self.waiting and (free >= self.join_at or not self.running):
                ended += self._admit(self._next_waiting(free))
            if self.running:
                ended += self._decode()
        return ended

    # --- joining -------------------------------------------------------------------------------------------

    def _next_waiting(self, count: int) -> list[Request]:
        """Up to `count` waiting requests, the groups taking turns (in one group: as submitted)."""
        groups: dict[Any, deque[Request]] = {}
        for request in self.waiting:
            groups.setdefault(request.group, deque()).append(request)
        chosen: list[Request] = []
        for request in itertools.chain.from_iterable(itertools.zip_longest(*groups.values())):
            if request is not None and len(chosen) < count:
                chosen.append(request)
        picked = set(map(id, chosen))
        self.waiting = deque(r for r in self.waiting if id(r) not in picked)
        return chosen

    def _admit(self, requests: list[Request]) -> list[Request]:
        """Prefill the requests (runs of similar length, the shared prefix reused), take each one's first token and
        put the unfinished ones into slots."""
        backend, torch = self.backend, self.torch
        ended = []
        rows = [r.ids for r in requests]
        for run in backend.prefill_runs(rows, backend.decode_run_cost(max(r.budget for r in requests))):
            logits, layers, keep = backend.prefill([rows[i] for i in run])
            longest = max(len(rows[i]) + requests[i].budget for i in run)
            self.width = min(self.width, max(1, fitting(torch, layers, longest)))
            self.cache.reserve(torch, layers, min(self.width, len(self.running) + len(run)), longest)
            firsts = self._choose(logits, [requests[i] for i in run])
            for k, i in enumerate(run):
                request = requests[i]
                if self._take(request, firsts[k]):
                    ended.append(request)
                    continue
                slot = len(self.running)
                self.cache.reserve(torch, layers, slot + 1, longest)
                self.cache.place(slot, ((key[k], value[k]) for key, value in layers), keep[k])
                self.running.append(request)
                self.lengths.append(len(request.ids))
            self._told([requests[i] for i in run])
        return ended

    # --- decoding ------------------------------------------------------------------------------------------

    def _decode(self) -> list[Request]:
        torch, cache = self.torch, self.cache
        count = len(self.running)
        lengths = torch.tensor(self.lengths, device=self.device)
        cache.step_rows = torch.arange(count, device=self.device)
        cache.step_positions = lengths
        cache.width = int(lengths.max()) + 1
        mask = torch.arange(cache.width, device=self.device)[None, :] <= lengths[:, None]
        last = torch.tensor([[r.new[-1]] for r in self.running], device=self.device)
        out = self.model(
            input_ids=last,
            position_ids=lengths[:, None],
            attention_mask=mask[:, None, None, :],
            use_cache=True,
            logits_to_keep=1,
            **{self.backend.cache_arg: cache},
        )
        chosen = self._choose(out.logits[:, -1, :], self.running)
        self.lengths = [n + 1 for n in self.lengths]
        ended = [r for r, token in zip(self.running, chosen, strict=True) if self._take(r, token)]
        self._told([r for r in self.running if r not in ended])
        self._leave(ended)
        return ended

    def _choose(self, logits: Any, requests: Sequence[Request]) -> list[int]:
        """Each row's next token: the allowed ones only where a rule says, greedy, or sampled at a temperature."""
        torch = self.torch
        logits = logits.float()
        for k, request in enumerate(requests):
            allowed = request.rule(request.new) if request.rule is not None else None
            if allowed is not None:
                keep = torch.full_like(logits[k], float("-inf"))
                index = torch.tensor(allowed, device=logits.device, dtype=torch.long)
                keep[index] = logits[k][index]
                logits[k] = keep
        greedy = logits.argmax(dim=-1).tolist()
        for k, request in enumerate(requests):
            if request.temperature > 0:
                probabilities = torch.softmax(logits[k] / request.temperature, dim=-1)
                greedy[k] = int(torch.multinomial(probabilities, 1))
        return greedy

    def _take(self, request: Request, token: int) -> bool:
        """The token into the request; whether it has ended."""
        if token in self.stops:
            request.finish = "stop"
        else:
            request.new.append(token)
            if len(request.new) >= request.budget:
                request.finish = "length"
        return request.done

    def _told(self, requests: Iterable[Request]) -> None:
        for request in requests:
            if request.on_tokens is not None:
                request.on_tokens(request)

    def _leave(self, ended: list[Request]) -> None:
        """The ended rows out of the batch: the last running row moves into each freed slot, so that the running
        rows stay the first slots."""
        for request in ended:
            slot = self.running.index(request)
            last = len(self.running) - 1
            if slot != last:
                self.cache.move(last, slot, self.lengths[last])
                self.running[slot], self.lengths[slot] = self.running[last], self.lengths[last]
            self.running.pop()
            self.lengths.pop()
            if request.on_tokens is not None:
                request.on_tokens(request)

    def _drop_cancelled(self) -> list[Request]:
        gone = [r for r in self.running if r.cancelled is not None and r.cancelled()]
        for request in gone:
            request.finish = "cancelled"
        waiting = [r for r in self.waiting if r.cancelled is not None and r.cancelled()]
        for request in waiting:
            request.finish = "cancelled"
            self.waiting.remove(request)
        self._leave(gone)
        return gone + waiting


def stop_tokens(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end an answer: the model's generation config's end tokens (what `generate` stops at), else
    the tokenizer's."""
    ends = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ends is None:
        ends = tokenizer.eos_token_id
    return set(ends if isinstance(ends, (list, tuple)) else [ends]) - {None}


MEMORY_SHARE = 0.25  # of the memory free on the model's device when buffers are sized: what the slots may take


def fitting(torch: Any, layers: Sequence[tuple[Any, Any]], length: int) -> int:
    """How many slots of `length` positions fit in MEMORY_SHARE of the memory free now (the GPU's, or the machine's
    RAM), so that a wide batch of long prompts on a large model never runs the device out of memory."""
    key = layers[0][0]
    per_slot = (
        sum(k.shape[1] * k.shape[3] * k.element_size() + v.shape[1] * v.shape[3] * v.element_size() for k, v in layers)
        * length
    )
    if key.device.type == "cuda":
        free = torch.cuda.mem_get_info(key.device)[0]
    else:
        import os

        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(free * MEMORY_SHARE // max(per_slot, 1))

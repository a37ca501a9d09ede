"""Tiny random models of the families users bring, built in code (no download): their tokenizers and chat templates
are what differ between families, so those are modelled on the real ones, while the weights are random.

- llama2:  SentencePiece-style BPE (Metaspace, byte fallback: decoding a lone "▁shoe" gives "shoe"), the Llama 2 chat
           template (system in <<SYS>>);
- llama3:  byte-level BPE that splits digits in groups of up to three, the Llama 3 header template;
- qwen2:   byte-level BPE, ChatML, a model with biased q/k/v projections;
- mistral: SentencePiece-style, a template that insists on alternating user/assistant turns (so refuses a system one);
- gemma:   SentencePiece-style, a template that raises "System role not supported", tied input and output embeddings;
- phi3:    SentencePiece-style, fused q/k/v and gate/up projections, a template that silently drops a system message;
- gpt2:    byte-level BPE, no chat template at all, Conv1D layers and tied embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.helpers.tiny_model import DEV_SET

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' }}"
    "{% if loop.first and system %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
PHI3 = (  # the first Phi-3 template: a system message is dropped without a word
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer: str  # sentencepiece | bytelevel | digits (byte-level, digits split in groups of three)
    template: str | None
    specials: tuple[str, ...]  # bos, eos (the turn's end, where generation stops), pad, then the template's own
    model: Callable[[int, dict[str, int]], torch.nn.Module]


def _texts() -> list[str]:
    rows = [json.loads(line)["input_field"] for line in DEV_SET.read_text(encoding="utf-8").splitlines() if line]
    return [*rows, "blue kettle 1.7 l", "tablette asus", "0 1 2 3 4 5 6 7 8 9 123 4567 89"]


def sentencepiece(vocab: int, specials: tuple[str, ...]) -> Tokenizer:
    """BPE over "▁"-prefixed words with byte fallback, decoded as Llama 2's fast tokenizer decodes."""
    trainer = trainers.BpeTrainer(vocab_size=vocab - 256, special_tokens=list(specials))
    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    base.train_from_iterator(_texts(), trainer=trainer)
    state = json.loads(base.to_str())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    table = dict(state["model"]["vocab"])
    for byte in range(256):  # what a character the vocabulary lacks is written with
        table.setdefault(f"<0x{byte:02X}>", len(table))
    tok = Tokenizer(models.BPE(table, merges, byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(list(specials))
    return tok


def bytelevel(vocab: int, specials: tuple[str, ...], split_digits: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:  # Llama 3: numbers in pieces of at most three digits
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r"\d{1,3}"), behavior="isolated"), level]
        )
    else:
        tok.pre_tokenizer = level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_texts(), trainer=trainer)
    return tok


def _llama(vocab: int, ids: dict[str, int]) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**_shape(vocab, ids)))


def _qwen2(vocab: int, ids: dict[str, int]) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**_shape(vocab, ids), tie_word_embeddings=False))


def _mistral(vocab: int, ids: dict[str, int]) -> torch.nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(**_shape(vocab, ids), sliding_window=None))


def _gemma(vocab: int, ids: dict[str, int]) -> torch.nn.Module:
    from transformers import GemmaConfig, GemmaForCausalLM

    model = GemmaForCausalLM(GemmaConfig(**_shape(vocab, ids), head_dim=16, tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def _phi3(vocab: int, ids: dict[str, int]) -> torch.nn.Module:
    from transformers import Phi3Config, Phi3ForCausalLM

    model = Phi3ForCausalLM(Phi3Config(**_shape(vocab, ids)))
    assert hasattr(model.model.layers[0].self_attn, "qkv_proj")  # fused q/k/v
    return model


def _gpt2(vocab: int, ids: dict[str, int]) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = {f"{k}_token_id": v for k, v in ids.items()}
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=4096, **ids))


def _shape(vocab: int, ids: dict[str, int]) -> dict:
    return {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
    }


FAMILIES = {
    family.name: family
    for family in (
        Family("llama2", "sentencepiece", LLAMA2, ("<s>", "</s>", "<unk>"), _llama),
        Family(
            "llama3",
            "digits",
            LLAMA3,
            ("<|begin_of_text|>", "<|eot_id|>", "<|finetune_pad|>", "<|start_header_id|>", "<|end_header_id|>"),
            _llama,
        ),
        Family("qwen2", "bytelevel", CHATML, ("<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>"), _qwen2),
        Family("mistral", "sentencepiece", MISTRAL, ("<s>", "</s>", "<unk>"), _mistral),
        Family(
            "gemma", "sentencepiece", GEMMA, ("<bos>", "<end_of_turn>", "<pad>", "<start_of_turn>", "<eos>"), _gemma
        ),
        Family("phi3", "sentencepiece", PHI3, ("<s>", "<|end|>", "<unk>", "<|user|>", "<|assistant|>"), _phi3),
        Family("gpt2", "bytelevel", None, ("<|endoftext|>", "<|end|>", "<|pad|>"), _gpt2),
    )
}


def build_family_model(name: str, out: Path, seed: int = 0) -> Path:
    """A tiny random model of the family, saved with its tokenizer and template as a Hugging Face folder."""
    family = FAMILIES[name]
    if family.tokenizer == "sentencepiece":
        tok = sentencepiece(700, family.specials)
    else:
        tok = bytelevel(600, family.specials, split_digits=family.tokenizer == "digits")
    bos, eos, pad = family.specials[:3]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)
    if family.template is not None:
        tokenizer.chat_template = family.template
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
    torch.manual_seed(seed)
    model = family.model(len(tokenizer), ids)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

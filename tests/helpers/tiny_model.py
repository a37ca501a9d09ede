"""A tiny random Llama with a real byte-level BPE tokenizer, built in code for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from shoptune.schema import read_examples

ROOT = Path(__file__).resolve().parents[2]
DEV_SET = ROOT / "data" / "shopbench" / "development.json"


def build_tiny_model(
    out: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    vocab: int = 600,
    seed: int = 0,
    digit_boost: float = 0.0,
    context: int = 2048,
) -> Path:
    """digit_boost > 0 scales the output rows of the digit tokens, so that greedy decoding often starts
    with a digit (as a trained model answering multiple choice would) while which digit still depends
    on the prompt."""
    texts = [ex.input_field for ex in read_examples(DEV_SET)] + [str(d) for d in range(10)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    if digit_boost:
        _favour_digits(model, tokenizer, texts[:48], digit_boost)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _favour_digits(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str], boost: float
) -> None:
    """Rewrite the digits' output rows: a shared part along the mean last hidden state lifts every digit
    above the other tokens, and a random part orthogonal to it lets the prompt decide which digit."""
    with torch.no_grad():
        states = torch.stack(
            [model.model(**tokenizer(p, return_tensors="pt")).last_hidden_state[0, -1] for p in prompts]
        )
        mean = states.mean(0)
        direction = mean / mean.norm()
        spread = (states - mean).norm(dim=1).mean()
        logits = model.lm_head(states)
        lift = (logits.max(dim=1).values.mean() + boost) / (states @ direction).mean()
        for d in range(10):
            row = torch.randn(states.shape[1])
            row -= (row @ direction) * direction
            row *= boost / (row.norm() * spread)
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(str(d))] = row + lift * direction

"""Pretrain shoptune's embedded default model from the raw product text shipped in `data/raw`.

No pretrained LLM can be downloaded on the machines shoptune is developed and tested on, so the
project ships its own few-million-parameter Llama-architecture causal LM. It exists so that every
command runs end to end on a bare CPU; it is not a useful shopping assistant (see its model card).

Run from the repository root:

    python scripts/build_default_model.py --minutes 40 --out src/shoptune/default_model
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
OFFER_FIELD = re.compile(r"COL (\w+) VAL ([^\t]*?)(?= COL |\s*$)")
LANG_TAG = re.compile(r'"([^"]*)"@\w+')


def taxonomy_lines() -> list[str]:
    """Category paths in English and German, as 'Category: A > B > C'."""
    lines = []
    for name in ("taxonomy-with-ids.en-US.txt", "taxonomy-with-ids.de-DE.txt"):
        label = "Category" if "en-US" in name else "Kategorie"
        for raw in (RAW / "google-taxonomy" / name).read_text(encoding="utf-8").splitlines():
            if raw.startswith("#") or " - " not in raw:
                continue
            lines.append(f"{label}: {raw.split(' - ', 1)[1].strip()}")
    return lines


def offer_text(serialised: str) -> str:
    """One offer, 'COL title VAL x COL price VAL y', as 'title: x; price: y'."""
    fields = []
    for key, value in OFFER_FIELD.findall(serialised):
        value = LANG_TAG.sub(lambda m: m.group(1).strip(), value).strip().strip('"').strip()
        if value:
            fields.append(f"{key}: {value}")
    return "; ".join(fields)


def offer_lines() -> list[str]:
    """Distinct offers from the training splits of the product-matching sets."""
    seen: set[str] = set()
    for path in sorted((RAW / "product-matching").glob("*/train.txt")):
        for row in path.read_text(encoding="utf-8").splitlines():
            for side in row.split("\t")[:2]:
                text = offer_text(side)
                if text and text not in seen:
                    seen.add(text)
    return sorted(seen)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE: any script (German umlauts, Japanese) stays encodable, byte by byte if need be."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        model_max_length=1024,
    )


def token_stream(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.append(tokenizer.bos_token_id)
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "shoptune" / "default_model")
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)

    texts = taxonomy_lines() + offer_lines()
    random.shuffle(texts)
    tokenizer = train_tokenizer(texts, args.vocab_size)
    stream = token_stream(tokenizer, texts)
    n_val = len(stream) // 50
    val, train = stream[:n_val], stream[n_val:]
    print(f"corpus: {len(texts)} lines, {len(stream)} tokens", flush=True)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)

    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    budget = args.minutes * 60
    warmup = 100
    start = time.monotonic()
    step, seen_tokens = 0, 0
    log: list[dict[str, float]] = []

    def batch(source: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(source) - args.seq_len - 1, (args.batch_size,), generator=gen)
        return torch.stack([source[s : s + args.seq_len] for s in starts])

    def val_loss() -> float:
        model.eval()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            loss = sum(model(input_ids=(x := batch(val, gen)), labels=x).loss.item() for _ in range(8))
        model.train()
        return loss / 8

    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    while (elapsed := time.monotonic() - start) < budget:
        # Cosine on elapsed time: the schedule ends when the budget does, whatever the speed.
        frac = min(elapsed / budget, 1.0)
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in optim.param_groups:
            group["lr"] = lr
        x = batch(train, gen)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        step += 1
        seen_tokens += x.numel()
        if step % 200 == 0:
            entry = {"step": step, "minutes": elapsed / 60, "train_loss": loss.item(), "val_loss": val_loss()}
            log.append(entry)
            print(json.dumps(entry), flush=True)

    final = {
        "steps": step,
        "tokens_seen": seen_tokens,
        "val_loss": val_loss(),
        "minutes": (time.monotonic() - start) / 60,
    }
    print(json.dumps(final), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    stats = {
        "parameters": n_params,
        "corpus_lines": len(texts),
        "corpus_tokens": len(stream),
        "args": {k: str(v) for k, v in vars(args).items()},
        "final": final,
        "log": log,
        "torch": torch.__version__,
    }
    (args.out / "training_log.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

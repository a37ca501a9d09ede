"""Write the worked example's tables: public data that ships in data/raw, re-shaped the way a shop's own exports
often look (other column names, other formats, yes/no labels). Derived, not a shop's real data: each table keeps
the licence of the public data it comes from (see sources.yaml and data/raw/SOURCES.md).

    python examples/own-data/make_tables.py      # rewrites examples/own-data/tables/ (the same bytes every time)
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shoptune.sources.registry import load_raw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> None:
    corpus = load_raw(ROOT / "data" / "raw")  # the training part: the held-out benchmark's items stay out
    rng = random.Random(0)
    out = HERE / "tables"
    out.mkdir(exist_ok=True)

    pairs = rng.sample(corpus.pairs, 1200)
    with (out / "catalogue_matches.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title_a", "brand_a", "price_a", "title_b", "brand_b", "price_b", "is_match"])
        for p in pairs:
            row = [p.left.title, p.left.brand or "", p.left.price or "", p.right.title, p.right.brand or ""]
            writer.writerow([*row, p.right.price or "", "Y" if p.same else "N"])

    with (out / "category_tree.jsonl").open("w", encoding="utf-8") as handle:
        for c in corpus.categories["en"]:
            handle.write(json.dumps({"node": c.id, "breadcrumb": list(c.path)}, ensure_ascii=False) + "\n")

    with (out / "search_log.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["query_id", "search_text", "landing_class"])
        writer.writerows([q.id, q.query, q.product_class] for q in corpus.queries)

    evidence = [e for e in corpus.evidence if e.dataset.startswith("ePQA")][:3000]
    table = pa.table(
        {
            "qid": [e.question_id for e in evidence],
            "customer_question": [e.question for e in evidence],
            "page_snippet": [e.evidence for e in evidence],
            "snippet_type": [e.kind for e in evidence],
            "grade": [e.label for e in evidence],
            "agent_answer": [e.answer for e in evidence],
            "product_title": [e.title for e in evidence],
        }
    )
    pq.write_table(table, out / "product_questions.parquet")

    # Instruction data a shop may already have: customer questions answered from a product page, as chat turns.
    answered = [e for e in corpus.evidence if e.dataset == "hetPQA/answer_generation" and e.answer][:600]
    with (out / "support_chats.jsonl").open("w", encoding="utf-8") as handle:
        for e in answered:
            ask = f"A customer asks: {e.question}\nFrom the product page ({e.kind}): {e.evidence}\n"
            ask += "Write a short answer."
            turns = [{"role": "user", "content": ask}, {"role": "assistant", "content": e.answer}]
            handle.write(json.dumps({"chat": turns}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

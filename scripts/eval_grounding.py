"""How often does the guard's grounding check remove a sentence it should keep, and catch one it should not?

For each contract (the golden set ``evals/summary/contracts``, the sample contracts
``pipeline/data/contracts`` and, with ``--corpus``, any other directory of contracts) this
does what a summarize job does, in-process and without workers: chunk the document, pick
the summary's context by the retrieve stage's coverage rule and token budget, write the
extractive summary, and hand the guard's claims (summary sentences, ``key_terms``,
``risks``) to ``grounding`` with the chunks the job used. Rows:

- ``extractive``: the claims of the extractive summary; every one is copied text, so
  every removal is a false removal (goal 0).
- ``derived``: one sentence per extracted field, the way a model would write it
  ("Effective date: 2025-02-01.", "Term: 24 months."), grounded in all of the document's
  chunks (the fields are read from the whole document); also goal 0, as far as the field
  extractor is right.
- ``ungrounded``: real claims with one fact changed (a number, a date, a party, the
  governing law, a duration) to a value the document does not contain, and invented
  sentences on topics the document does not mention; built with a seeded random
  generator, not from a list. Goal: at least 0.9 removed.

The same claims go through the grounding code of a git revision (``--before``, default
``dba0813``, the last commit before the grounding fix of issue #11 item 4) and through the working
tree's, side by side.

    python scripts/eval_grounding.py [--corpus DIR ...] [--json-out grounding.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.generation.extractive import ExtractiveGenerator  # noqa: E402
from pipeline.guard import grounding as current_grounding  # noqa: E402
from pipeline.guard.validators import grounding_claims  # noqa: E402
from pipeline.retrieval.chunking import chunk_document  # noqa: E402
from pipeline.retrieval.ingest import read_document  # noqa: E402
from pipeline.retrieval.vectorstore import Hit  # noqa: E402
from pipeline.settings import GuardPolicy, Settings  # noqa: E402
from schemas import ContextChunk  # noqa: E402

GOLDEN = REPO / "evals" / "summary" / "contracts"
SAMPLES = REPO / "pipeline" / "data" / "contracts"
Grounding = Callable[..., Any]

#: jurisdictions to swap in; one the document does not mention is chosen.
JURISDICTIONS = (
    "the State of Texas", "the Province of Ontario", "Singapore", "New South Wales", "Sweden", "Japan",
    "the State of Florida", "Switzerland", "the State of Nevada", "Hong Kong", "Quebec", "Norway",
)  # fmt: skip
#: invented obligations: (topic words that must be absent from the document, sentence template).
INVENTED = (
    (("insurance", "insured"), "{a} shall maintain cyber insurance with a limit of {money}."),
    (("arbitration", "arbitrator"), "Any dispute shall be settled by arbitration in {city} before {n} arbitrators."),
    (("non-compete", "compete"), "{a} shall not compete with {b} in {place} for {n} years after termination."),
    (("escrow",), "{b} shall deposit the source code with an escrow agent within {n} days."),
    (("rebate",), "{b} is entitled to a volume rebate of {n} percent on purchases above {money}."),
    (("carbon", "emission"), "{a} shall report its carbon emissions to {b} every {n} months."),
    (("drone",), "{a} may use drones to inspect the site on {n} days' notice."),
    (("lottery", "raffle"), "{b} shall hold a quarterly raffle for {a}'s staff with prizes worth {money}."),
    (("exclusive", "exclusivity"), "{a} grants {b} exclusivity in {place} for the first {n} months."),
    (("golf",), "{b} shall provide {a} with {n} golf memberships at its own cost."),
    (("franchise",), "{a} shall pay {b} a franchise fee of {money} on signature."),
    (("crypto", "bitcoin"), "All fees may be paid in bitcoin at the exchange rate on the invoice date."),
)  # fmt: skip
CITIES = ("Geneva", "Reykjavik", "Lisbon", "Montevideo", "Osaka", "Tallinn", "Nairobi", "Auckland")


@dataclass
class Doc:
    name: str
    group: str
    text: str
    used: list[tuple[str, str]]  # the chunks the job used: (chunk_id, text)
    every: list[tuple[str, str]]  # all of the document's chunks
    claims: list[str]
    derived: list[str]
    parties: list[str]
    governing_law: str | None


@dataclass
class Case:
    doc: str
    group: str
    kind: str
    sentence: str
    chunks: list[tuple[str, str]] = field(repr=False)


def load_grounding(revision: str) -> Grounding:
    """``grounding`` as ``pipeline/guard/grounding.py`` is at ``revision``, imported from the git object."""
    source = subprocess.run(
        ["git", "show", f"{revision}:pipeline/guard/grounding.py"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("grounding_at_" + re.sub(r"\W", "_", revision))
    module.__dict__["__name__"] = module.__name__
    sys.modules[module.__name__] = module  # dataclasses look the module up
    exec(compile(source, f"{revision}:pipeline/guard/grounding.py", "exec"), module.__dict__)  # noqa: S102
    return module.__dict__["grounding"]


def field_sentences(out: dict[str, Any]) -> list[str]:
    """The extracted fields as a model would write them in prose."""
    sentences = []
    if out.get("parties"):
        sentences.append(f"Parties: {' and '.join(out['parties'])}.")
    if out.get("effective_date"):
        sentences.append(f"Effective date: {out['effective_date']}.")
    if isinstance(out.get("term_months"), int):
        sentences.append(f"Term: {out['term_months']} months.")
    if out.get("governing_law"):
        sentences.append(f"Governing law: {out['governing_law']}.")
    for name, label in (("payment", "Payment"), ("liability_cap", "Liability cap")):
        if out.get(name):
            sentences.append(f"{label}: {out[name]}.")
    if out.get("termination_notice_days"):
        sentences.append(f"Termination notice: {out['termination_notice_days']} days.")
    return sentences


def summarize_docs(paths: Sequence[tuple[str, Path]], settings: Settings) -> list[Doc]:
    generator = ExtractiveGenerator(embedder=None)  # type: ignore[arg-type]  # summaries embed nothing
    docs = []
    for group, path in paths:
        doc_id, text = read_document(path)
        chunks = chunk_document(doc_id, text, max_tokens=settings.chunk_max_tokens,
                                overlap_tokens=settings.chunk_overlap_tokens)  # fmt: skip
        hits = [Hit(c.chunk_id, doc_id, "eval", c.section, c.text, 0.0, c.position) for c in chunks]
        picked = hits  # a summary reads its whole document (the retrieve stage's whole-document strategy)

        def context(selection: Sequence[Hit]) -> list[ContextChunk]:
            return [ContextChunk(chunk_id=h.chunk_id, doc_id=h.doc_id, section=h.section, text=h.text, score=0.0)
                    for h in selection]  # fmt: skip

        out = generator.summarize(context(picked)).model_dump()
        _, sentences, items = grounding_claims(out)
        docs.append(Doc(
            name=path.name, group=group, text=text,
            used=[(h.chunk_id, h.text) for h in picked], every=[(h.chunk_id, h.text) for h in hits],
            claims=sentences + [i for values in items.values() for i in values],
            derived=field_sentences(out), parties=list(out.get("parties") or []),
            governing_law=out.get("governing_law"),
        ))  # fmt: skip
    return docs


# --- the ungrounded sentences ---------------------------------------------------------------------------
_NUM = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?!\d)|(?<![\w.,])\d+(?![\w])")
#: a party name worth swapping in: capitalised words (a role like "Licensee" or a misread clause is not one).
_NAME = re.compile(r"(?:the )?[A-Z0-9][\w&.,'’-]*(?: (?:[A-Z0-9&][\w&.,'’-]*|of|and|de|for|the))+")
_DURATION = re.compile(r"\b(\d+|[a-z]+ \(\d+\))(\s+)(days?|weeks?|months?|years?)\b", re.IGNORECASE)


def _absent_number(rng: random.Random, old: int, doc_terms: set[str]) -> int:
    for _ in range(50):
        new = max(1, old + rng.choice([-1, 1]) * rng.randint(1, max(3, old // 2 + 3)))
        if new != old and str(new) not in doc_terms:
            return new
    return old * 7 + 13


def perturb(doc: Doc, others: Sequence[Doc], rng: random.Random) -> list[tuple[str, str, bool]]:
    """(kind, sentence, derived) triples: the doc's real claims and field sentences with one fact changed,
    plus invented sentences (``derived``: judged against all of the document's chunks, not the job's)."""
    terms = current_grounding.content_terms(doc.text)
    low = doc.text.lower()
    out: list[tuple[str, str, bool]] = []
    pool = [(s, False) for s in doc.claims] + [(s, True) for s in doc.derived]
    for sentence, derived in pool:
        dates = [m for m in current_grounding._DATE.finditer(sentence) if current_grounding._dates(m)]
        if dates:
            m = rng.choice(dates)
            day = current_grounding._dates(m)[0]
            for shift in (37, 71, 400, -45):
                new = day.fromordinal(day.toordinal() + shift)
                if current_grounding._date_token(new) not in terms:
                    written = rng.choice(
                        [new.isoformat(), f"{new.day} {new:%B} {new.year}", f"{new:%B} {new.day}, {new.year}"]
                    )
                    out.append(("date", sentence[: m.start()] + written + sentence[m.end() :], derived))
                    break
        durations = list(_DURATION.finditer(sentence))
        if durations:
            m = rng.choice(durations)
            digits = int(re.sub(r"\D", "", m.group(1)))
            new_n = _absent_number(rng, digits, terms)
            changed = sentence[: m.start()] + f"{new_n}{m.group(2)}{m.group(3)}" + sentence[m.end() :]
            out.append(("duration", changed, derived))
        numbers = [m for m in _NUM.finditer(sentence)
                   if not any(d.start() <= m.start() < d.end() for d in dates)]  # fmt: skip
        if numbers:
            m = rng.choice(numbers)
            old = int(m.group(0).replace(",", ""))
            new_n = _absent_number(rng, old, terms)
            written = f"{new_n:,}" if "," in m.group(0) else str(new_n)
            out.append(("number", sentence[: m.start()] + written + sentence[m.end() :], derived))
        for party in doc.parties:
            if party and party in sentence:
                strangers = [p for o in others for p in o.parties if p.lower() not in low and _NAME.fullmatch(p)]
                if strangers:
                    out.append(("party", sentence.replace(party, rng.choice(strangers)), derived))
                break
        law = doc.governing_law
        if law and law in sentence:
            absent = [j for j in JURISDICTIONS if j.lower().removeprefix("the ").split(" of ")[-1] not in low]
            if absent:
                out.append(("governing law", sentence.replace(law, rng.choice(absent)), derived))
    names = doc.parties or ["The Supplier", "The Customer"]
    for topic_words, template in INVENTED:
        if any(word in low for word in topic_words):
            continue
        a, b = (names[0], names[1]) if len(names) > 1 else (names[0], "the other party")
        money = rng.choice(["USD", "EUR", "GBP"]) + f" {rng.randint(2, 90) * 50_000:,}"
        sentence = template.format(a=a, b=b, n=rng.randint(2, 9), money=money, city=rng.choice(CITIES),
                                   place=rng.choice(CITIES))  # fmt: skip
        out.append(("invented", sentence, True))
    return out


# --- running and reporting -------------------------------------------------------------------------------
def removed(fn: Grounding, sentences: Sequence[str], chunks: Sequence[tuple[str, str]], threshold: float) -> list[int]:
    return list(fn(list(sentences), list(chunks), threshold).unsupported)


def evaluate(docs: Sequence[Doc], versions: dict[str, Grounding], threshold: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rows: dict[str, dict[str, Any]] = {}
    details: list[dict[str, Any]] = []

    def tally(row: str, doc: Doc, kind: str, sentences: Sequence[str], chunks: Sequence[tuple[str, str]]) -> None:
        entry = rows.setdefault(row, {"sentences": 0, **{v: 0 for v in versions}})
        entry["sentences"] += len(sentences)
        for version, fn in versions.items():
            hits = removed(fn, sentences, chunks, threshold)
            entry[version] += len(hits)
            # what went wrong: every removal of a sentence to keep, every ungrounded sentence kept
            wrong = [i for i in range(len(sentences)) if (i in hits) != (row == "ungrounded: all")]
            if row.startswith("ungrounded") and row != "ungrounded: all":
                wrong = []
            for i in wrong:
                details.append({"row": row, "version": version, "doc": doc.name, "kind": kind,
                                "sentence": sentences[i], "verdict": "removed" if i in hits else "kept"})  # fmt: skip

    for doc in docs:
        tally(f"extractive / {doc.group}", doc, "extractive", doc.claims, doc.used)
        tally(f"derived fields / {doc.group}", doc, "derived", doc.derived, doc.every)
        others = [d for d in docs if d is not doc]
        cases = perturb(doc, others, rng)
        for kind in sorted({k for k, _, _ in cases}):
            for derived, chunk_set in ((False, doc.used), (True, doc.every)):
                sentences = [s for k, s, d in cases if k == kind and d == derived]
                if sentences:
                    tally(f"ungrounded: {kind}", doc, kind, sentences, chunk_set)
                    tally("ungrounded: all", doc, kind, sentences, chunk_set)
    for entry in rows.values():
        for version in versions:
            entry[f"{version}_rate"] = round(entry[version] / entry["sentences"], 3) if entry["sentences"] else None
    return {"rows": rows, "errors": details}


def print_table(result: dict[str, Any], versions: Sequence[str]) -> None:
    head = f"{'sentences':44} {'n':>5} " + " ".join(f"{'removed ' + v:>22}" for v in versions) + "  goal"
    print(head)
    print("-" * len(head))
    for row, entry in result["rows"].items():
        goal = ">= 0.9" if row.startswith("ungrounded") else "0"
        cells = " ".join(f"{entry[v]:>5} ({entry[v + '_rate']:.3f})".rjust(22) for v in versions)
        print(f"{row:44} {entry['sentences']:>5} {cells}  {goal}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, action="append", default=[], help="another directory of contracts")
    parser.add_argument("--before", default="dba0813",
                        help="git revision whose grounding.py is 'before' (default: before the fix; '' to skip)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--show", action="store_true", help="print every sentence removed that should stay, and kept that should go"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    threshold = GuardPolicy().grounding_threshold
    paths = [("golden", p) for p in sorted(GOLDEN.glob("*.md"))] + [
        ("samples", p) for p in sorted(SAMPLES.glob("*.md"))
    ]
    for directory in args.corpus:
        paths += [(directory.name, p) for p in sorted(directory.glob("*.md"))]
    docs = summarize_docs(paths, settings)
    versions: dict[str, Grounding] = {}
    if args.before:
        versions["before"] = load_grounding(args.before)
    versions["after"] = current_grounding.grounding
    result = evaluate(docs, versions, threshold, args.seed)
    print(f"{len(docs)} contracts, threshold {threshold}, before = {args.before or '-'}, seed {args.seed}\n")
    print_table(result, list(versions))
    if args.show:
        for item in result["errors"]:
            print(
                f"\n[{item['version']}] {item['verdict']}: {item['row']} ({item['kind']}) {item['doc']}: "
                f"{item['sentence']!r}"
            )
    if args.json_out:
        payload = {"threshold": threshold, "before": args.before, "seed": args.seed, "documents": len(docs), **result}
        args.json_out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Extractive question answering data (SQuAD style): read, clean, split, window and batch.

``read_squad_json`` turns a SQuAD v1.1 file into one row per question (malformed records skipped or fatal, see
``MALFORMED_POLICIES``); ``load_qa_splits`` loads train/validation(/test) from the embedded task, files or the
hub; ``tokenize_for_qa`` cuts each question + context into ``[cls] question [sep] context-window [eos]`` rows
with per-token character offsets into the original context, so predicted token spans map back to text.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import logging
import lzma
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets import Dataset, Features, List, Value
from tokenizers import Tokenizer

from attnfit.atomic import atomic_write
from attnfit.data.lm import _pad
from attnfit.data.sources import SOURCE_KINDS, _expand, _hub_splits, default_embedded_dir
from attnfit.data.synthetic_qa import write_embedded_qa
from attnfit.data.tokenizer import special_token_id, tokenizer_fingerprint
from attnfit.errors import ConfigError, DataError, check_choice

logger = logging.getLogger("attnfit")

QA_DATA_VERSION = "1"  # bump when the rows of load_qa_splits or the windows of tokenize_for_qa change
MAP_BATCH_SIZE = 500
MALFORMED_POLICIES = ("skip", "error")
REPAIR_WINDOW = 20  # an answer found this many characters from its stated start is moved there, not dropped
NULL_POSITION = 0  # start/end position of windows without the answer: the <cls> token
SEGMENT_QUESTION, SEGMENT_CONTEXT, SEGMENT_END = 0, 1, 2  # <cls> question <sep> | context | <eos> and padding
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

ROW_FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "paragraph": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answer_texts": List(Value("string")),
        "answer_starts": List(Value("int64")),
    }
)
WINDOW_FEATURES = Features(
    {
        "input_ids": List(Value("int32")),
        "segment_ids": List(Value("int8")),
        "offsets": List(List(Value("int32"))),
        "start_position": Value("int32"),
        "end_position": Value("int32"),
        "example_index": Value("int64"),
    }
)


# --- reading and cleaning ---------------------------------------------------------------------------------


@dataclass
class QAReadSummary:
    """What ``read_squad_json`` kept, skipped (per reason) and repaired, for one source."""

    origin: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: int = 0

    def summary(self) -> str:
        """One line, e.g. "train.json: kept 98 questions, skipped 2 (1 no answers, 1 empty question), repaired 1"."""
        line = f"{self.origin}: kept {self.kept} question{'s' if self.kept != 1 else ''}"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            line += f", skipped {sum(self.skipped.values())} ({reasons})"
        if self.repaired:
            line += f", repaired {self.repaired} answer start{'s' if self.repaired != 1 else ''}"
        return line


class _Malformed(Exception):
    """A record that breaks one rule; ``reason`` is the short key counted in ``QAReadSummary.skipped``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _locate(context: str, text: str, start: object) -> tuple[int, bool]:
    """(start, repaired) of ``text`` in ``context``: the stated start if it matches, else the only occurrence or the
    nearest one within ``REPAIR_WINDOW`` characters. Such off-by-a-few starts are common in crowd-sourced data."""
    if isinstance(start, bool) or not isinstance(start, int):
        start = None  # a start that is not a number is treated as unknown
    if start is not None and start >= 0 and context[start : start + len(text)] == text:
        return start, False
    hits, at = [], context.find(text)
    while at != -1:
        hits.append(at)
        at = context.find(text, at + 1)
    if len(hits) == 1:
        return hits[0], True
    if hits and start is not None:
        nearest = min(hits, key=lambda h: (abs(h - start), h))
        if abs(nearest - start) <= REPAIR_WINDOW:
            return nearest, True
    where = f"not at {start} and not within {REPAIR_WINDOW} characters" if start is not None else "not placeable"
    raise _Malformed("answer not in context", f"{text!r} is {where}")


def _clean_row(raw: dict, require_answers: bool, require_located: bool = True) -> tuple[dict, int]:
    """A raw question record {id, title, paragraph, context, question, answers: [{text, answer_start}]} as a row;
    also the number of answer starts repaired. Raises ``_Malformed``.

    A reference answer that is not in the context is kept as text (start -1: it still counts when scoring) as
    long as another one is placed, which comes first (the one training uses); with ``require_located=False``
    (evaluation splits) a question is kept even when none is placed."""
    for name in ("context", "question", "answers"):
        if raw.get(name) is None:
            raise _Malformed("missing field", f"no {name!r}")
    context, question, answers = raw["context"], raw["question"], raw["answers"]
    if not isinstance(context, str) or not context.strip():
        raise _Malformed("empty context")
    if not isinstance(question, str) or not question.strip():
        raise _Malformed("empty question")
    if not isinstance(answers, list) or (require_answers and not answers):
        raise _Malformed("no answers")
    texts, starts, repaired = [], [], 0
    for answer in answers:
        if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
            raise _Malformed("missing field", "an answer without 'text' or 'answer_start'")
        text = answer["text"]
        if not isinstance(text, str) or not text.strip():
            raise _Malformed("empty answer")
        try:
            start, moved = _locate(context, text, answer["answer_start"])
        except _Malformed as error:
            start, moved, unplaced = -1, False, error
        texts.append(text)
        starts.append(start)
        repaired += moved
    if starts and max(starts) < 0 and require_located:
        raise unplaced
    placed_first = sorted(range(len(starts)), key=lambda i: starts[i] < 0)  # stable: the first placed answer leads
    texts, starts = [texts[i] for i in placed_first], [starts[i] for i in placed_first]
    row = {
        "id": str(raw["id"]),
        "title": str(raw.get("title") or ""),
        "paragraph": raw["paragraph"],
        "context": context,
        "question": question,
        "answer_texts": texts,
        "answer_starts": starts,
    }
    return row, repaired


def _clean_rows(
    records: Iterable[dict], origin: str, malformed: str, require_answers: bool, require_located: bool = True
) -> tuple[list[dict], QAReadSummary]:
    """Apply the ``malformed`` policy to raw question records (each may carry a "_bad" structural reason)."""
    check_choice("data.malformed", malformed, MALFORMED_POLICIES)
    report, rows, ids = QAReadSummary(origin), [], set()
    for raw in records:
        try:
            if "_bad" in raw:
                raise _Malformed("missing field", raw["_bad"])
            if raw.get("id") is None:
                raise _Malformed("missing field", "no 'id'")
            if str(raw["id"]) in ids:
                raise _Malformed("duplicate id")
            row, repaired = _clean_row(raw, require_answers, require_located)
        except _Malformed as bad:
            if malformed == "error":
                detail = f" ({bad.detail})" if bad.detail else ""
                qid = raw.get("id")
                where = f"question {str(qid)!r}" if qid is not None else raw.get("_where", "a question")
                raise DataError(
                    f"{origin}: {where}: {bad.reason}{detail}; set data.malformed=skip to drop such records"
                ) from None
            report.skipped[bad.reason] += 1
            continue
        ids.add(row["id"])
        rows.append(row)
        report.repaired += repaired
    report.kept = len(rows)
    return rows, report


def _open_text(path: Path):
    return _OPENERS.get(path.suffix.lower(), open)(path, "rt", encoding="utf-8")


def _squad_records(data: object, origin: str) -> Iterator[dict]:
    """Flatten SQuAD's article/paragraph/question nesting into raw question records (not yet checked)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{origin} is not SQuAD JSON: expected an object with a 'data' list of articles")
    paragraph_index = 0  # counts paragraphs over the whole file, so keys stay unique if titles repeat
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield {"_bad": "an article without 'paragraphs'", "_where": f"article {a}"}
            continue
        title = str(article.get("title") or "")
        for p, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                yield {"_bad": "a paragraph without 'qas'", "_where": f"article {a} paragraph {p}"}
                continue
            key = f"{title}#{paragraph_index}"
            paragraph_index += 1
            for qa in qas:
                if not isinstance(qa, dict):
                    yield {"_bad": "a question that is not an object", "_where": f"article {a} paragraph {p}"}
                    continue
                yield {**qa, "title": title, "paragraph": key, "context": paragraph.get("context")}


def read_squad_json(
    path: str | Path, malformed: str = "skip", require_answers: bool = True, require_located: bool = True
) -> tuple[list[dict], QAReadSummary]:
    """Read a SQuAD v1.1 JSON file (plain, .gz, .bz2 or .xz) into one row per question, and a report.

    Rows: ``id, title, paragraph, context, question, answer_texts, answer_starts``; ``paragraph`` is
    ``"{title}#{n}"`` with n counting the file's paragraphs, a stable key for splitting by paragraph.

    Malformed records: a missing field, an empty context or question, no answers (when ``require_answers``), an
    empty answer, a duplicate id, or an answer text that is not at its ``answer_start``. The last is repaired when
    the text occurs exactly once in the context or within 20 characters of the stated start; otherwise, like the
    others, the question is dropped with ``malformed="skip"`` (counted per reason in the report, and a warning)
    or raises DataError with ``"error"``. A reference that cannot be placed is kept as text (start -1) when another
    one is placed; with ``require_located=False`` (evaluation splits) even when none is: it still counts in scoring.
    DataError for a missing file or one that is not SQuAD JSON.
    """
    path = Path(path)
    origin = repr(str(path))
    if not path.is_file():
        raise DataError(f"SQuAD file {origin} does not exist")
    try:
        with _open_text(path) as f:
            data = json.load(f)
    except (OSError, ValueError, EOFError) as e:  # bad JSON, bad gzip, bad UTF-8
        raise DataError(f"could not read {origin} as SQuAD JSON: {type(e).__name__}: {e}") from e
    rows, report = _clean_rows(_squad_records(data, origin), origin, malformed, require_answers, require_located)
    if report.skipped or report.repaired:
        logger.warning("%s", report.summary())
    return rows, report


# --- splits -------------------------------------------------------------------------------------------------


def default_embedded_qa_dir(cache_dir: str | Path | None) -> Path:
    """Where the embedded QA task lives when no directory is configured (next to the LM corpus)."""
    return default_embedded_dir(cache_dir).with_name("embedded-qa")


def _rows_dataset(rows: list[dict], cache_dir: str | Path | None) -> Dataset:
    """Rows as a memory-mapped dataset saved under a content hash, so it has a stable fingerprint and
    ``tokenize_for_qa`` can cache its output next to it (an in-memory dataset would be re-tokenized every run)."""
    payload = json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()
    key = hashlib.sha256(f"{QA_DATA_VERSION}|".encode() + payload).hexdigest()[:32]
    final = default_embedded_dir(cache_dir).with_name("qa-rows") / key
    if not (final / "state.json").is_file():
        try:
            atomic_write(final, lambda tmp: Dataset.from_list(rows, features=ROW_FEATURES).save_to_disk(str(tmp)))
        except OSError:  # another process saved the same rows first
            if not (final / "state.json").is_file():
                raise
    return datasets.load_from_disk(str(final))


def _read_files(split: str, paths: str | list[str], malformed: str) -> tuple[list[dict], QAReadSummary]:
    """All SQuAD files of one split; with several files, paragraph keys get the file's position as a prefix."""
    files = _expand(split, paths)
    rows, total = [], QAReadSummary(", ".join(repr(p) for p in files[:3]) + (" and more" if len(files) > 3 else ""))
    for i, path in enumerate(files):
        located = split == "train"  # evaluation splits score every question, placed or not
        part, report = read_squad_json(path, malformed, require_answers=split != "test", require_located=located)
        for row in part:
            row["paragraph"] = f"{i}/{row['paragraph']}" if len(files) > 1 else row["paragraph"]
        rows.extend(part)
        total.kept += report.kept
        total.skipped.update(report.skipped)
        total.repaired += report.repaired
    if len({r["id"] for r in rows}) < len(rows):
        raise DataError(f"split {split!r} from {total.origin}: question ids repeat across its files")
    return rows, total


def _hub_records(ds: Dataset, split: str) -> Iterator[dict]:
    """Raw records from a hub split with SQuAD's columns (answers as {"text": [...], "answer_start": [...]})."""
    for batch in ds.iter(batch_size=MAP_BATCH_SIZE):
        for i in range(len(batch["id"])):
            answers = batch["answers"][i] or {}
            texts, starts = answers.get("text") or [], answers.get("answer_start") or []
            context = batch["context"][i]
            title = batch.get("title", [""] * len(batch["id"]))[i] or ""
            digest = hashlib.sha1((context or "").encode()).hexdigest()[:12]
            if len(texts) != len(starts):
                yield {"_bad": "answers with unequal text and answer_start lists", "id": batch["id"][i]}
                continue
            yield {
                "id": batch["id"][i],
                "title": title,
                "paragraph": f"{title}#{digest}",  # the hub has no paragraph numbers: the context itself is the key
                "context": context,
                "question": batch["question"][i],
                "answers": [{"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=True)],
            }


def _read_hub(
    hub_path: str | None, hub_subset: str | None, hub_splits: dict[str, str] | None, malformed: str, cache_dir
) -> dict[str, tuple[list[dict], QAReadSummary]]:
    raw, origin = _hub_splits(hub_path, hub_subset, hub_splits, cache_dir)
    out = {}
    for ours, (ds, theirs) in raw.items():
        missing = [c for c in ("id", "context", "question", "answers") if c not in ds.column_names]
        if missing:
            raise DataError(
                f"{origin} split {theirs!r} lacks SQuAD column(s) {', '.join(missing)}; "
                f"available columns: {', '.join(ds.column_names)}"
            )
        where = f"{origin} split {theirs!r}"
        rows, report = _clean_rows(
            _hub_records(ds, theirs), where, malformed, require_answers=ours != "test", require_located=ours == "train"
        )
        if report.skipped or report.repaired:
            logger.warning("%s", report.summary())
        out[ours] = (rows, report)
    return out


def split_by_paragraph(rows: list[dict], val_fraction: float, seed: int, origin: str) -> tuple[list, list]:
    """Hold out about ``val_fraction`` of the questions, whole contexts at a time, so no context is in both parts.

    Contexts (not paragraph keys) are the unit, so a paragraph repeated under two keys cannot leak either.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    contexts = sorted({r["context"] for r in rows})
    if len(contexts) < 2:
        raise DataError(
            f"train split from {origin} has {len(contexts)} distinct context(s); need at least 2 to hold out a "
            f"validation set by paragraph (or give a validation split)"
        )
    random.Random(seed).shuffle(contexts)
    sizes = Counter(r["context"] for r in rows)
    target, held, count = val_fraction * len(rows), set(), 0
    for context in contexts[:-1]:  # the last one always stays in train
        if count >= target and held:
            break
        held.add(context)
        count += sizes[context]
    return [r for r in rows if r["context"] not in held], [r for r in rows if r["context"] in held]


def load_qa_splits(
    source: str,
    files: dict[str, str | list[str]] | None = None,
    hub_path: str | None = None,
    hub_subset: str | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    embedded_dir: str | Path | None = None,
    malformed: str = "skip",
    hub_splits: dict[str, str] | None = None,
) -> dict[str, Dataset]:
    """Load QA splits "train", "validation" and "test" when there is one, as rows of ``read_squad_json``.

    ``source`` is one of:

    * "embedded": the task of ``write_embedded_qa``, written once to ``embedded_dir``, default
      ``<cache_dir>/embedded-qa``;
    * "files": ``files`` maps split -> SQuAD JSON path(s) or glob(s) (optionally .gz); "train" is required;
    * "hub": ``datasets.load_dataset(hub_path, hub_subset)`` with SQuAD's columns ``id, title, context,
      question, answers{text, answer_start}``; ``hub_splits`` {ours: theirs} renames splits.

    Without a validation split, ``val_fraction`` of train is held out by paragraph with ``seed``. Answers are
    required except in "test". ``malformed`` ("skip" or "error") is the policy of ``read_squad_json``.
    """
    check_choice("data source kind", source, SOURCE_KINDS)
    check_choice("data.malformed", malformed, MALFORMED_POLICIES)
    datasets.utils.logging.set_verbosity_warning()
    if source == "hub":
        loaded = _read_hub(hub_path, hub_subset, hub_splits, malformed, cache_dir)
    else:
        if source == "embedded":
            directory = embedded_dir if embedded_dir is not None else default_embedded_qa_dir(cache_dir)
            files = {split: str(path) for split, path in write_embedded_qa(Path(directory)).items()}
        files = {split: paths for split, paths in (files or {}).items() if paths is not None}
        if "train" not in files:
            raise ConfigError(f"data.train (a SQuAD JSON file) is required; got splits: {', '.join(files) or '(none)'}")
        loaded = {split: _read_files(split, paths, malformed) for split, paths in files.items()}
    for split, (rows, report) in loaded.items():
        if not rows:
            raise DataError(f"split {split!r} from {report.origin} has no usable questions ({report.summary()})")
    rows = {split: rows for split, (rows, _) in loaded.items()}
    if "validation" not in rows:
        rows["train"], rows["validation"] = split_by_paragraph(
            rows["train"], val_fraction, seed, loaded["train"][1].origin
        )
    return {split: _rows_dataset(split_rows, cache_dir) for split, split_rows in rows.items()}


# --- windows ------------------------------------------------------------------------------------------------


def _trimmed_offsets(context: str, offsets: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token character spans without surrounding whitespace.

    Byte-level BPE folds the preceding space into a token ("Ġcat" spans " cat"), so its spans are trimmed to
    the visible text; a token that is only whitespace gets an empty span [e, e) that overlaps no answer. Offsets
    from ``tokenizers`` count characters (code points) of the original string whatever the normalizer did; a
    CJK character or emoji split into several byte tokens gives each of them the span of the whole character.
    """
    out = []
    for start, end in offsets:
        while start < end and context[start].isspace():
            start += 1
        while end > start and context[end - 1].isspace():
            end -= 1
        out.append([start, end])
    return out


def _answer_token_span(offsets: Sequence[Sequence[int]], char_start: int, char_end: int) -> tuple[int, int] | None:
    """(first, last) context token overlapping the character span [char_start, char_end), or None if none does.

    Overlap, not containment: a token may be wider than the answer ("cats" for "cat", a BPE token holding half of
    "ü"), and the span decoded from the tokens must still contain the whole answer.
    """
    hits = [i for i, (s, e) in enumerate(offsets) if s < char_end and e > char_start and s < e]
    return (hits[0], hits[-1]) if hits else None


def _window_starts(length: int, budget: int, stride: int) -> list[int]:
    """Starts of windows of ``budget`` tokens over ``length`` tokens, advancing by ``stride``; the last one ends
    at the end (BERT's run_squad convention: overlapping windows, each token in at least one)."""
    starts = [0]
    while starts[-1] + budget < length:
        starts.append(starts[-1] + stride)
    return starts


def _window_batch(
    batch: dict,
    indices: list[int],
    tokenizer: Tokenizer,
    seq_len: int,
    doc_stride: int,
    max_question_len: int,
    cls_id: int,
    sep_id: int,
    eos_id: int,
) -> dict:
    """Every row of ``batch`` as one or more ``[cls] question [sep] window [eos]`` rows."""
    questions = tokenizer.encode_batch(batch["question"], add_special_tokens=False)
    contexts = tokenizer.encode_batch(batch["context"], add_special_tokens=False)
    out: dict[str, list] = {name: [] for name in WINDOW_FEATURES}
    out["unmapped"] = []
    for index, q_enc, c_enc, context, texts, starts in zip(
        indices, questions, contexts, batch["context"], batch["answer_texts"], batch["answer_starts"], strict=True
    ):
        question = q_enc.ids[:max_question_len]
        ids, offsets = c_enc.ids, _trimmed_offsets(context, c_enc.offsets)
        answer = _answer_token_span(offsets, starts[0], starts[0] + len(texts[0])) if texts else None
        budget = seq_len - 3 - len(question)
        head = [cls_id, *question, sep_id]
        for w, start in enumerate(_window_starts(len(ids), budget, doc_stride)):
            end = min(start + budget, len(ids))
            out["input_ids"].append([*head, *ids[start:end], eos_id])
            out["segment_ids"].append(
                [SEGMENT_QUESTION] * len(head) + [SEGMENT_CONTEXT] * (end - start) + [SEGMENT_END]
            )
            out["offsets"].append([[-1, -1]] * len(head) + offsets[start:end] + [[-1, -1]])
            inside = answer is not None and start <= answer[0] and answer[1] < end
            shift = len(head) - start
            out["start_position"].append(answer[0] + shift if inside else NULL_POSITION)
            out["end_position"].append(answer[1] + shift if inside else NULL_POSITION)
            out["example_index"].append(index)
            out["unmapped"].append(w == 0 and bool(texts) and answer is None)
    return out


def _window_numbers(batch: dict, indices: list[int]) -> dict:
    return {"window_index": indices}


def _check_window_config(seq_len: int, doc_stride: int, max_question_len: int) -> int:
    """The smallest context budget any example gets; ConfigError for settings that cannot make windows."""
    if max_question_len < 1:
        raise ConfigError(f"data.max_question_len must be >= 1, got {max_question_len}")
    if seq_len < 5:
        raise ConfigError(
            f"data.seq_len must be >= 5 for QA ([cls] question [sep] context [eos], at least one token of each), "
            f"got {seq_len}"
        )
    budget = seq_len - 3 - min(max_question_len, seq_len - 4)
    if not 1 <= doc_stride < budget:
        raise ConfigError(
            f"data.doc_stride must be >= 1 and < the context budget seq_len - 3 - max_question_len = {budget} "
            f"(seq_len={seq_len}, max_question_len={max_question_len}) so that windows overlap, got {doc_stride}"
            + ("; raise data.seq_len or lower data.max_question_len" if budget < 2 else "")
        )
    return budget


def tokenize_for_qa(
    ds: Dataset,
    tokenizer: Tokenizer,
    seq_len: int = 384,
    doc_stride: int = 128,
    max_question_len: int = 64,
    split: str = "train",
    num_proc: int | None = None,
) -> Dataset:
    """Cut each question + context into windows of at most ``seq_len`` tokens: one row per window.

    Row: ``input_ids = [cls] question [sep] context[a:b] [eos]`` (the question cut to ``max_question_len``),
    ``segment_ids`` (0 for cls/question/sep, 1 context, 2 eos), ``offsets`` ([start, end) characters of the
    original context per token, [-1, -1] for non-context tokens; whitespace trimmed, so a whitespace token has an
    empty span), ``start_position``/``end_position`` (inclusive token indices of the first answer when it lies
    wholly inside the window, else 0/0: the <cls> null answer), ``example_index`` (row of ``ds``) and
    ``window_index`` (row of the output). Consecutive windows start ``doc_stride`` tokens apart, so they overlap.
    Cached like ``tokenize_for_classification``; ConfigError for settings that leave no room for overlapping
    windows.
    """
    for column in ("context", "question", "answer_texts", "answer_starts"):
        if column not in ds.column_names:
            raise DataError(
                f"split {split!r} has no {column!r} column; available columns: {', '.join(ds.column_names)}"
            )
    _check_window_config(seq_len, doc_stride, max_question_len)
    ids = {f"{role}_id": special_token_id(tokenizer, role) for role in ("cls", "sep", "eos")}
    params = (seq_len, doc_stride, max_question_len, QA_DATA_VERSION)
    key = "|".join(map(str, (ds._fingerprint, tokenizer_fingerprint(tokenizer), *params)))
    windows = ds.map(
        _window_batch,
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        with_indices=True,
        remove_columns=ds.column_names,
        num_proc=num_proc,
        fn_kwargs={
            "tokenizer": tokenizer,
            "seq_len": seq_len,
            "doc_stride": doc_stride,
            "max_question_len": max_question_len,
            **ids,
        },
        features=Features({**WINDOW_FEATURES, "unmapped": Value("bool")}),
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        desc=f"windowing ({split}, seq_len={seq_len}, doc_stride={doc_stride})",
    )
    unmapped = int(np.asarray(windows.data.column("unmapped")).sum()) if len(windows) else 0
    if unmapped:
        logger.warning(
            "%d answers in split %r cover no token (e.g. characters the tokenizer drops); their windows point at "
            "the null answer",
            unmapped,
            split,
        )
    windows = windows.remove_columns("unmapped")
    return windows.map(
        _window_numbers,
        batched=True,
        batch_size=10_000,
        with_indices=True,
        features=Features({**WINDOW_FEATURES, "window_index": Value("int64")}),
        new_fingerprint=hashlib.sha256(f"{key}|window_index".encode()).hexdigest()[:32],
        desc=f"numbering windows ({split})",
    )


@dataclass
class QACollator:
    """QA batches: right-padded "input_ids" (B, T), "padding_mask" (B, T) True at padding, "segment_ids" (B, T)
    with padding as segment 2, "start_positions"/"end_positions" (B,), "window_index" (B,) and "num_tokens".

    Evaluation windows that carry "id", "context", "answer_texts" (and always "offsets") pass them on as lists:
    decoding a span back to text needs them."""

    pad_id: int

    def __call__(self, examples: Sequence[dict]) -> dict:
        input_ids, padding_mask = _pad(examples, self.pad_id)
        segments, _ = _pad([{"input_ids": ex["segment_ids"]} for ex in examples], SEGMENT_END)
        batch = {
            "input_ids": input_ids,
            "padding_mask": padding_mask,
            "segment_ids": segments,
            "start_positions": torch.tensor([int(ex["start_position"]) for ex in examples], dtype=torch.long),
            "end_positions": torch.tensor([int(ex["end_position"]) for ex in examples], dtype=torch.long),
            "window_index": torch.tensor([int(ex["window_index"]) for ex in examples], dtype=torch.long),
            "num_tokens": int((~padding_mask).sum()),
        }
        if examples and "id" in examples[0]:
            batch.update({key: [ex[key] for ex in examples] for key in ("id", "context", "answer_texts", "offsets")})
        return batch

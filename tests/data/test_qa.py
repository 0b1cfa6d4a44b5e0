import gzip
import json
import logging

import pytest
import torch
from datasets import Dataset

from attnfit.data.qa import (
    ROW_FEATURES,
    QACollator,
    load_qa_splits,
    read_squad_json,
    split_by_paragraph,
    tokenize_for_qa,
)
from attnfit.data.qa_metrics import answer_tokens, best_spans, exact_match, f1, normalize_answer, squad_scores
from attnfit.data.synthetic_qa import generate_qa_articles, write_embedded_qa
from attnfit.data.tokenizer import CLS_ID, EOS_ID, PAD_ID, SEP_ID, train_tokenizer
from attnfit.errors import ConfigError, DataError

# (context, answer) pairs whose answers are whole words, in three scripts
CONTEXTS = {
    "english": ("The Eiffel Tower was finished in 1889 by Gustave Eiffel's company.", "Gustave Eiffel's company"),
    "accented": ("Le café de Zürich a ouvert à Genève en 1990, dit Hélène.", "Genève"),
    "chinese": ("北京是中华人民共和国的首都，也是政治中心。", "中华人民共和国"),
    "emoji": ("We met at the 🎉 party near the old bridge 😀 yesterday.", "old bridge"),
}
CORPUS = [text for text, _ in CONTEXTS.values()] * 3 + ["What When Where who is the capital 什么 首都 ?"] * 3


@pytest.fixture(scope="module", params=["bpe", "wordpiece", "word", "char"])
def tok(request):
    return train_tokenizer(request.param, CORPUS, vocab_size=300, min_frequency=1)


def _rows(pairs, question="Where is it?"):
    rows = []
    for i, (context, answer) in enumerate(pairs):
        start = context.index(answer)
        rows.append(
            {
                "id": f"q{i}",
                "title": "t",
                "paragraph": f"t#{i}",
                "context": context,
                "question": question,
                "answer_texts": [answer],
                "answer_starts": [start],
            }
        )
    return Dataset.from_list(rows, features=ROW_FEATURES)


def _squad(paragraphs):
    """A SQuAD v1.1 object: paragraphs are (context, [(id, question, [(text, start)])])."""
    return {
        "version": "1.1",
        "data": [
            {
                "title": "Article",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": qid, "question": q, "answers": [{"text": t, "answer_start": s} for t, s in answers]}
                            for qid, q, answers in qas
                        ],
                    }
                    for context, qas in paragraphs
                ],
            }
        ],
    }


CTX = "Paris is the capital of France. Berlin is the capital of Germany."
MESSY = _squad(
    [
        (
            CTX,
            [
                ("good", "What is the capital of France?", [("Paris", 0)]),
                ("moved", "What is the capital of Germany?", [("Berlin", 35)]),  # really at 32: repaired
                ("blank", "   ", [("Paris", 0)]),
                ("none", "What is it?", []),
                ("absent", "What is the capital of Spain?", [("Madrid", 3)]),
                ("good", "Duplicate id?", [("Paris", 0)]),
            ],
        ),
        ("   ", [("empty-ctx", "Anything?", [("x", 0)])]),
    ]
)
MESSY["data"][0]["paragraphs"][0]["qas"].append({"id": "noq", "answers": [{"text": "Paris", "answer_start": 0}]})


# --- reading --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_squad_skips_and_repairs(tmp_path, caplog, gz):
    path = tmp_path / ("messy.json.gz" if gz else "messy.json")
    text = json.dumps(MESSY)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        rows, report = read_squad_json(path)
    assert [r["id"] for r in rows] == ["good", "moved"]
    assert rows[1]["answer_starts"] == [CTX.index("Berlin")] and rows[1]["answer_texts"] == ["Berlin"]
    assert rows[0]["paragraph"] == "Article#0" and rows[0]["context"] == CTX
    assert report.kept == 2 and report.repaired == 1
    assert dict(report.skipped) == {
        "empty question": 1,
        "no answers": 1,
        "answer not in context": 1,
        "duplicate id": 1,
        "missing field": 1,
        "empty context": 1,
    }
    summary = report.summary()
    assert "\n" not in summary and "kept 2 questions" in summary and "skipped 6" in summary
    assert "repaired 1 answer start" in summary and summary in caplog.text


def test_read_squad_error_policy_names_file_id_and_reason(tmp_path):
    path = tmp_path / "messy.json"
    path.write_text(json.dumps(MESSY), encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_squad_json(path, malformed="error")
    message = str(info.value)
    assert "\n" not in message
    assert "messy.json" in message and "'blank'" in message and "empty question" in message
    assert "set data.malformed=skip" in message
    with pytest.raises(ConfigError, match="valid choices: error, skip"):
        read_squad_json(path, malformed="drop")


def test_read_squad_bad_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_squad_json(tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="is not SQuAD JSON"):
        read_squad_json(tmp_path / "list.json")
    (tmp_path / "broken.json").write_text('{"data": [')
    with pytest.raises(DataError, match="could not read"):
        read_squad_json(tmp_path / "broken.json")


# --- splits -------------------------------------------------------------------------------------------------


def _many_paragraphs(n=30, per=3):
    paragraphs = []
    for p in range(n):
        context = f"Town {p} has {p + 10} bridges and {p + 3} towers."
        qas = [(f"p{p}q{q}", f"How many bridges, version {q}?", [(f"{p + 10}", context.index(f"{p + 10}"))])
               for q in range(per)]  # fmt: skip
        paragraphs.append((context, qas))
    return _squad(paragraphs)


def test_files_hold_out_validation_by_paragraph(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_many_paragraphs()), encoding="utf-8")
    splits = load_qa_splits("files", files={"train": str(path)}, val_fraction=0.2, seed=1, cache_dir=tmp_path)
    train, val = splits["train"], splits["validation"]
    assert set(splits) == {"train", "validation"}
    assert not set(train["context"][:]) & set(val["context"][:])
    assert sorted(train["id"][:] + val["id"][:]) == sorted(f"p{p}q{q}" for p in range(30) for q in range(3))
    assert len(val) == 18  # 20% of 90 questions, whole paragraphs of 3
    again = load_qa_splits("files", files={"train": str(path)}, val_fraction=0.2, seed=1, cache_dir=tmp_path)
    assert again["validation"]["id"][:] == val["id"][:] and again["train"]._fingerprint == train._fingerprint


def test_split_by_paragraph_keeps_repeated_contexts_together():
    rows = [{"context": f"c{i % 5}", "id": str(i)} for i in range(40)]
    train, val = split_by_paragraph(rows, 0.3, seed=0, origin="x")
    assert val and train and not {r["context"] for r in train} & {r["context"] for r in val}
    with pytest.raises(DataError, match="distinct context"):
        split_by_paragraph(rows[:1], 0.3, seed=0, origin="x")


def test_hub_source_reads_squad_columns(tmp_path):
    """The hub path runs datasets.load_dataset for real, on a local folder of SQuAD-shaped jsonl files."""
    hub = tmp_path / "hub"
    hub.mkdir()
    for split, n in (("train", 6), ("validation", 2)):
        with open(hub / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                context = f"Item {i} of {split} costs {i + 5} coins."
                answers = {"text": [str(i + 5)], "answer_start": [context.index(f"costs {i + 5}") + 6]}
                row = {"id": f"{split}{i}", "title": "shop", "context": context, "question": "Cost?"}
                f.write(json.dumps({**row, "answers": answers}) + "\n")
        if split == "train":  # a malformed hub row: the answer is nowhere in the context
            bad = {"id": "bad", "title": "shop", "context": "No price here.", "question": "Cost?",
                   "answers": {"text": ["99"], "answer_start": [0]}}  # fmt: skip
            with open(hub / "train.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(bad) + "\n")
    splits = load_qa_splits("hub", hub_path=str(hub), cache_dir=tmp_path / "cache")
    assert len(splits["train"]) == 6 and len(splits["validation"]) == 2
    row = splits["train"][3]
    assert row["answer_texts"] == ["8"] and row["context"][row["answer_starts"][0] :].startswith("8 coins")
    with pytest.raises(DataError, match="'bad': answer not in context"):
        load_qa_splits("hub", hub_path=str(hub), cache_dir=tmp_path / "cache", malformed="error")


def test_bad_source_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown data source kind 'file'.*did you mean 'files'"):
        load_qa_splits("file", files={"train": "x.json"})
    with pytest.raises(DataError) as info:
        load_qa_splits("files", files={"train": str(tmp_path / "missing.json")})
    assert "missing.json" in str(info.value) and "does not exist" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="data.train"):
        load_qa_splits("files", files={"validation": str(tmp_path / "v.json")})


# --- windows and offsets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(CONTEXTS))
def test_answer_span_round_trips_through_offsets(tok, script):
    context, answer = CONTEXTS[script]
    windows = tokenize_for_qa(_rows([(context, answer)]), tok, seq_len=128, doc_stride=32, max_question_len=16)
    assert len(windows) == 1
    row = windows[0]
    start, end = row["start_position"], row["end_position"]
    assert 0 < start <= end
    assert row["segment_ids"][start] == row["segment_ids"][end] == 1
    decoded = context[row["offsets"][start][0] : row["offsets"][end][1]]
    assert answer in decoded
    if script != "chinese":  # whole-word answers map to exactly their words (BPE merges may cross CJK characters)
        assert decoded == answer
    for (s, e), segment in zip(row["offsets"], row["segment_ids"], strict=True):
        assert (s, e) == (-1, -1) if segment != 1 else 0 <= s <= e <= len(context)
        assert segment != 1 or context[s:e] == context[s:e].strip()  # whitespace trimmed from spans


def test_layout_and_segments(tok):
    context, answer = CONTEXTS["english"]
    row = tokenize_for_qa(_rows([(context, answer)]), tok, seq_len=128, doc_stride=32, max_question_len=2)[0]
    ids, segments = row["input_ids"], row["segment_ids"]
    assert ids[0] == CLS_ID and ids[3] == SEP_ID and ids[-1] == EOS_ID  # question cut to 2 tokens
    assert segments[:4] == [0, 0, 0, 0] and segments[-1] == 2 and set(segments[4:-1]) == {1}
    assert row["offsets"][:4] == [[-1, -1]] * 4 and row["example_index"] == 0 and row["window_index"] == 0


def test_long_context_windows_advance_by_doc_stride():
    tok = train_tokenizer("char", ["abcdefghijklmnopqrstuvwxyz ?"], vocab_size=100)
    context = "".join(chr(ord("a") + i % 26) for i in range(200))
    answer_start = 150
    rows = [
        {"id": "q", "title": "", "paragraph": "", "context": context, "question": "abc?",
         "answer_texts": [context[answer_start : answer_start + 5]], "answer_starts": [answer_start]},
    ]  # fmt: skip
    ds = Dataset.from_list(rows * 2, features=ROW_FEATURES)
    windows = tokenize_for_qa(ds, tok, seq_len=64, doc_stride=20, max_question_len=8)
    budget = 64 - 3 - 4  # 4 question tokens
    per_example = [w for w in windows if w["example_index"] == 0]
    firsts = [w["offsets"][6][0] for w in per_example]  # first context token after [cls] a b c ? [sep]
    assert firsts == list(range(0, 161, 20)) and firsts[-2] + budget < 200 <= firsts[-1] + budget
    assert per_example[-1]["offsets"][-2][1] == 200 and all(len(w["input_ids"]) <= 64 for w in windows)
    assert [w["window_index"] for w in windows] == list(range(len(windows)))
    for w in per_example:
        covered = [s for s, _ in w["offsets"] if s >= 0]
        holds = covered[0] <= answer_start and answer_start + 4 <= covered[-1]
        if holds:
            assert w["offsets"][w["start_position"]][0] == answer_start
            assert w["offsets"][w["end_position"]][1] == answer_start + 5
        else:
            assert (w["start_position"], w["end_position"]) == (0, 0)
    assert sum(w["start_position"] > 0 for w in per_example) == 3  # the windows starting at 100, 120 and 140


def test_window_config_errors(tok):
    ds = _rows([CONTEXTS["english"]])
    with pytest.raises(ConfigError, match=r"doc_stride must be >= 1 and < the context budget .* = 45"):
        tokenize_for_qa(ds, tok, seq_len=64, doc_stride=45, max_question_len=16)
    with pytest.raises(ConfigError, match="doc_stride"):
        tokenize_for_qa(ds, tok, seq_len=64, doc_stride=0, max_question_len=16)
    with pytest.raises(ConfigError, match="seq_len must be >= 5"):
        tokenize_for_qa(ds, tok, seq_len=4, doc_stride=1, max_question_len=1)


def test_tokenize_is_cached(tmp_path, tok):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_many_paragraphs(6, 2)), encoding="utf-8")
    splits = load_qa_splits("files", files={"train": str(path)}, cache_dir=tmp_path)
    first = tokenize_for_qa(splits["train"], tok, seq_len=32, doc_stride=8, max_question_len=8)
    second = tokenize_for_qa(splits["train"], tok, seq_len=32, doc_stride=8, max_question_len=8)
    other = tokenize_for_qa(splits["train"], tok, seq_len=32, doc_stride=9, max_question_len=8)
    assert first._fingerprint == second._fingerprint != other._fingerprint
    assert first.cache_files and first.cache_files == second.cache_files


def test_collator_pads():
    rows = [
        {"input_ids": [6, 9, 5, 10, 11, 3], "segment_ids": [0, 0, 0, 1, 1, 2], "start_position": 3,
         "end_position": 4, "window_index": 7},
        {"input_ids": [6, 9, 5, 12, 3], "segment_ids": [0, 0, 0, 1, 2], "start_position": 0,
         "end_position": 0, "window_index": 2},
    ]  # fmt: skip
    batch = QACollator(PAD_ID)(rows)
    assert batch["input_ids"].tolist()[1] == [6, 9, 5, 12, 3, PAD_ID]
    assert batch["padding_mask"].tolist() == [[False] * 6, [False] * 5 + [True]]
    assert batch["segment_ids"].tolist()[1] == [0, 0, 0, 1, 2, 2]
    assert batch["start_positions"].tolist() == [3, 0] and batch["end_positions"].tolist() == [4, 0]
    assert batch["window_index"].tolist() == [7, 2] and batch["num_tokens"] == 11


# --- metrics ------------------------------------------------------------------------------------------------


def test_normalisation_and_tokens():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert answer_tokens("“北京”，中国。") == ["北", "京", "中", "国"]
    assert answer_tokens("2008年北京奥运会") == ["2008", "年", "北", "京", "奥", "运", "会"]


def test_exact_match_and_f1_worked_examples():
    assert exact_match("the Eiffel Tower.", ["Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel tower"]) == 0.0
    # [in, big, red, house] vs [red, house]: overlap 2, P = 2/4, R = 2/2 -> F1 = 2/3
    assert f1("in the big red house", ["red house"]) == pytest.approx(2 / 3)
    # Chinese is character level: [北, 京, 市] vs [北, 京] -> P = 2/3, R = 1 -> F1 = 0.8
    assert f1("北京市", ["北京"]) == pytest.approx(0.8) and exact_match("北京市", ["北京"]) == 0.0
    assert exact_match("北京。", ["北 京"]) == 1.0
    # max over references: [big, red] vs [red, car] -> 0.5; vs [big, red, dog] -> P = 1, R = 2/3 -> 0.8
    assert f1("big red", ["a red car", "big red dog"]) == pytest.approx(0.8)
    assert f1("the", ["a"]) == 1.0 and f1("", ["paris"]) == 0.0
    with pytest.raises(DataError, match="reference answers"):
        f1("x", [])


def test_squad_scores_in_percent():
    refs = {"a": ["Eiffel Tower"], "b": ["red house"], "c": ["Paris"]}
    scores = squad_scores({"a": "The Eiffel Tower", "b": "big red house", "zzz": "ignored"}, refs)
    assert scores["count"] == 3
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 3)  # [big, red, house] vs [red, house]: 0.8; c: 0


# --- span decoding --------------------------------------------------------------------------------------------


def _window(context_tokens, head=3):
    """Offsets of [cls] q [sep] + one-character context tokens + [eos]."""
    return [[-1, -1]] * head + [[i, i + 1] for i in context_tokens] + [[-1, -1]]


def test_best_spans_respects_length_order_and_context():
    context = "abcdefgh"
    offsets = _window(range(8))
    start = torch.full((12,), -10.0)
    end = torch.full((12,), -10.0)
    start[0] = end[0] = 100.0  # <cls> is never an answer
    start[3], end[9] = 5.0, 6.0  # "a".."g": 7 tokens, too long for max_answer_len=4
    start[5], end[7] = 3.0, 2.0  # "c".."e"
    spans = best_spans([start], [end], [offsets], context, max_answer_len=4, n_best=3)
    assert spans[0].text == "cde" and (spans[0].token_start, spans[0].token_end) == (5, 7)
    assert spans[0].score == pytest.approx(5.0)
    assert [s.score for s in spans] == sorted((s.score for s in spans), reverse=True) and len(spans) == 3
    assert all(s.token_end - s.token_start < 4 and s.token_start >= 3 for s in spans)
    assert sum(s.probability for s in spans) == pytest.approx(1.0)
    long = best_spans([start], [end], [offsets], context, max_answer_len=7, n_best=1)
    assert long[0].text == "abcdefg" and long[0].score == pytest.approx(11.0)


def test_best_spans_across_windows_dedups_overlap():
    context = "abcdefghij"
    first, second = _window(range(0, 6)), _window(range(4, 10))  # windows overlap on "ef"
    s1, e1 = torch.zeros(10), torch.zeros(10)
    s2, e2 = torch.zeros(10), torch.zeros(10)
    s1[3 + 4], e1[3 + 5] = 2.0, 2.0  # "ef" in window 0: score 4
    s2[3 + 0], e2[3 + 1] = 2.0, 2.0  # "ef" in window 1: same characters, score 4
    s2[3 + 4], e2[3 + 5] = 3.0, 3.0  # "ij" in window 1: score 6
    spans = best_spans([s1, s2], [e1, e2], [first, second], context, max_answer_len=3, n_best=5)
    assert (spans[0].text, spans[0].window, spans[0].char_start, spans[0].char_end) == ("ij", 1, 8, 10)
    assert spans[1].text == "ef" and spans[1].window == 0  # the tie goes to the earlier window
    assert len({(s.char_start, s.char_end) for s in spans}) == len(spans) == 5
    assert best_spans([torch.zeros(4)], [torch.zeros(4)], [[[-1, -1]] * 4], "x", 5, 5) == []


# --- embedded task ----------------------------------------------------------------------------------------------


def test_embedded_generator_deterministic_disjoint_and_placed(tmp_path):
    assert generate_qa_articles(50, seed=3) == generate_qa_articles(50, seed=3)
    assert generate_qa_articles(50, seed=3) != generate_qa_articles(50, seed=4)
    paths = write_embedded_qa(tmp_path / "a", 300, 60, 60, seed=0)
    again = write_embedded_qa(tmp_path / "b", 300, 60, 60, seed=0)
    mtime = paths["train"].stat().st_mtime_ns
    assert write_embedded_qa(tmp_path / "a", 300, 60, 60, seed=0) == paths
    assert paths["train"].stat().st_mtime_ns == mtime  # reused, not rewritten
    contexts = {}
    for split, path in paths.items():
        assert path.read_bytes() == again[split].read_bytes()
        rows, report = read_squad_json(path, malformed="error")
        assert len(rows) == {"train": 300, "validation": 60, "test": 60}[split] and report.repaired == 0
        for row in rows:
            start, text = row["answer_starts"][0], row["answer_texts"][0]
            assert row["context"][start : start + len(text)] == text
            assert row["context"].count(".") in range(3, 7)
        contexts[split] = {row["context"] for row in rows}
    assert not contexts["train"] & contexts["validation"] and not contexts["train"] & contexts["test"]
    assert not contexts["validation"] & contexts["test"]


def test_embedded_source_loads(tmp_path):
    splits = load_qa_splits("embedded", embedded_dir=tmp_path / "qa", cache_dir=tmp_path / "cache")
    assert {name: len(ds) for name, ds in splits.items()} == {"train": 4000, "validation": 400, "test": 400}
    assert not set(splits["train"]["context"][:]) & set(splits["validation"]["context"][:])


def test_bpe_byte_tokens_of_one_character_share_its_span():
    """Byte-level BPE trained without CJK splits each such character into several byte tokens with the same
    character offsets: the answer maps to the first byte of its first character and the last of its last."""
    tok = train_tokenizer("bpe", ["plain english words only"] * 5, vocab_size=300, min_frequency=1)
    context, answer = "我们在上海见面 😀 了", "上海"
    row = tokenize_for_qa(_rows([(context, answer)]), tok, seq_len=128, doc_stride=16, max_question_len=8)[0]
    offsets, start, end = row["offsets"], row["start_position"], row["end_position"]
    assert offsets[start] == offsets[start + 1] == offsets[start + 2] == [3, 4]  # 上 is 3 bytes: 3 tokens
    assert offsets[start - 1] == [2, 3] and offsets[end] == [4, 5] and offsets[end + 1] == [5, 6]
    assert context[offsets[start][0] : offsets[end][1]] == answer
    emoji = [i for i, o in enumerate(offsets) if o == [8, 9]]
    assert len(emoji) == 4  # 😀 is one code point, four bytes
    logits = torch.full((len(offsets),), -5.0)
    starts, ends = logits.clone(), logits.clone()
    starts[start + 1], ends[end - 1] = 4.0, 4.0  # middle byte tokens still give whole characters
    spans = best_spans([starts], [ends], [offsets], context, max_answer_len=10, n_best=5)
    assert spans[0].text == answer and len({(s.char_start, s.char_end) for s in spans}) == len(spans)


def test_a_reference_answer_not_in_the_context_stays_a_reference(tmp_path):
    """CMRC-style dev questions list several references; one that is not in the context (a paraphrase) must not drop
    the question: the placed answer leads (training uses it), the other still counts when scoring. Evaluation
    splits keep a question even when no reference is placed."""
    qas = [("a", "Where?", [("at Torville", 0), ("Torford", 15)]), ("b", "Who?", [("Tovik", 0)])]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(_squad([("Marel lives in Torford.", qas)])))
    train, report = read_squad_json(path)
    assert [r["id"] for r in train] == ["a"] and report.skipped["answer not in context"] == 1
    assert train[0]["answer_texts"] == ["Torford", "at Torville"] and train[0]["answer_starts"][0] == 15
    assert train[0]["answer_starts"][1] == -1
    evaluation, _ = read_squad_json(path, require_located=False)
    assert [r["id"] for r in evaluation] == ["a", "b"] and evaluation[1]["answer_starts"] == [-1]

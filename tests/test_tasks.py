"""Task generators, scorers on hand-made examples, and task files' one-line errors."""

from __future__ import annotations

import json

import pytest

from mvjax.data.tasks import (facts_task, load_task_file, passkey_task, reading_task, recall_task)
from mvjax.data.tasks.base import Item, accuracy_summary, exact_match, rank_correct, wilson_interval


def test_rank_and_exact_scorers_on_hand_made_examples():
    assert rank_correct([-1.0, -3.0, -2.0], 0)
    assert not rank_correct([-1.0, -3.0, -0.5], 0)
    assert not rank_correct([-1.0, -1.0], 0)  # a tie is not a win
    assert exact_match([5, 6, 7], [5, 6, 7])
    assert not exact_match([5, 6], [5, 6, 7]) and not exact_match([], [])
    s = accuracy_summary([True, True, True, False], 0.25)
    assert (s["n"], s["correct"], s["accuracy"], s["above_chance"]) == (4, 3, 0.75, 0.5)
    lo, hi = s["ci95"]
    assert lo < 0.75 < hi and 0 <= lo and hi <= 1


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)  # textbook: 0.490 – 0.943
    assert abs(lo - 0.4902) < 1e-3 and abs(hi - 0.9433) < 1e-3
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_generators_are_seeded_and_put_the_answer_in_the_prompt():
    for make in (lambda s: passkey_task(5, 128, seed=s), lambda s: recall_task(5, seed=s),
                 lambda s: reading_task(5, seed=s)):
        a, b, c = make(0), make(0), make(1)
        assert a == b and a != c
        for it in a.items:
            assert it.answer in it.choices and len(it.choices) == 4
            assert it.answer.strip() in it.prompt  # contextual: the answer is in the prompt
        assert a.rank_chance == 0.25 and a.kind == "contextual"


def test_reading_distractors_are_not_in_the_prompt():
    for it in reading_task(20, seed=3).items:
        others = [c.strip() for c in it.choices if c != it.answer]
        assert not any(f" {o}." in it.prompt for o in others)


def test_passkey_respects_length_and_depth():
    count = lambda s: len(s.split())  # noqa: E731  (any token counter)
    t = passkey_task(3, 200, count, seed=0)
    assert all(count(it.prompt) + 1 <= 200 for it in t.items)
    first, last = t.items[0].prompt, t.items[-1].prompt
    key0, key2 = t.items[0].answer.strip(), t.items[-1].answer.strip()
    assert first.index(key0) < len(first) * 0.3 < len(last) * 0.7 < last.index(key2)


def test_facts_have_no_context():
    t = facts_task()
    assert t.kind == "parametric" and len(t.items) >= 50
    assert all(it.answer.strip() not in it.prompt.split() for it in t.items)


def _write(tmp_path, rows, name="mine.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return p


def test_task_file_both_shapes(tmp_path):
    p = _write(tmp_path, [{"prompt": "Q1", "choices": [" A", " B"], "answer": " B"},
                          {"prompt": "Q2", "target": " yes"}, ""])
    t = load_task_file(p)
    assert t.name == "mine" and len(t.items) == 2
    assert t.items[0].answer_index == 1 and t.items[1].target == " yes"
    assert t.rank_chance == 0.5
    assert t.kind == "user"


def test_task_file_declares_its_kind(tmp_path):
    p = _write(tmp_path, [{"prompt": "The capital of France is", "choices": [" Paris", " Rome"],
                           "answer": " Paris", "kind": "parametric"},
                          {"prompt": "The capital of Italy is", "target": " Rome", "kind": "parametric"}])
    assert load_task_file(p).kind == "parametric"


@pytest.mark.parametrize("rows, msg", [
    ([], "is empty"),
    (["{not json"], r"mine.jsonl:1 is not valid JSON"),
    ([{"choices": [" A"]}], "has no \"prompt\""),
    ([{"prompt": "x"}], "neither"),
    ([{"prompt": "x", "choices": [" A", " B"], "answer": " C"}], "not among the choices"),
    ([{"prompt": "x", "choices": [" A"], "answer": " A"}], "at least 2"),
    ([{"prompt": "x", "choices": [" A", " A"], "answer": " A"}], "repeat"),
    ([{"prompt": "x", "target": " a", "kind": "factual"}], "kind.*invalid"),
    ([{"prompt": "x", "target": " a", "kind": "contextual"},
      {"prompt": "y", "target": " b", "kind": "parametric"}], r"mine.jsonl:2: kind 'parametric' differs"),
    ([{"prompt": "x", "target": " a", "kind": "contextual"}, {"prompt": "y", "target": " b"}],
     "differs.*split it"),
])
def test_task_file_errors_are_one_line(tmp_path, rows, msg):
    p = _write(tmp_path, rows)
    with pytest.raises(ValueError, match=msg) as e:
        load_task_file(p)
    assert "\n" not in str(e.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task_file(tmp_path / "nope.jsonl")


def test_item_validation():
    with pytest.raises(ValueError, match="not among"):
        Item("p", (" a", " b"), " c")
    with pytest.raises(ValueError, match="needs choices"):
        Item("p")


def test_builtin_task_set_sizes_kinds_and_chance():
    from mvjax.data.tasks import builtin_tasks

    tasks = {t.name: t for t in builtin_tasks(lambda s: len(s) // 4, 100, seed=0)}
    assert {"passkey_128", "passkey_256", "passkey_512", "passkey_1024", "passkey_128_d6",
            "passkey_256_d12", "classify", "arithmetic", "kv_recall", "reading", "facts", "world"} == set(tasks)
    assert all(len(t.items) >= 100 for n, t in tasks.items() if n != "facts")
    assert len(tasks["world"].items) >= 200 and tasks["world"].kind == "parametric"
    assert tasks["kv_recall"].exact_chance == pytest.approx(1 / 6)
    assert tasks["classify"].rank_chance == 0.5 and tasks["arithmetic"].rank_chance == 0.25
    key = tasks["passkey_256_d12"].items[0].answer.strip()
    assert len(key) == 12 and key in tasks["passkey_256_d12"].items[0].prompt


def test_classify_labels_exist_only_in_the_prompt():
    from mvjax.data.tasks import classify_task

    t = classify_task(40, seed=1)
    pairs = {tuple(sorted(it.choices)) for it in t.items}
    assert len(pairs) > 10  # label words change from item to item
    for it in t.items:
        assert all(c.strip() in it.prompt for c in it.choices)
    assert sum(it.answer == it.choices[0] for it in t.items) not in (0, 40)


def test_arithmetic_numbers_are_in_the_prompt_and_distractors_are_not():
    from mvjax.data.tasks import arithmetic_task

    for it in arithmetic_task(60, seed=2).items:
        head, eq = it.prompt.rsplit("Answer: ", 1)
        a, op, b, _ = eq.split()
        assert a in head and b in head
        assert int(it.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        assert all(c.strip() not in (a, b) for c in it.choices)


def test_world_facts_are_new_and_context_free():
    from mvjax.data.tasks import world_task

    w, f = world_task(), facts_task()
    assert not {i.prompt for i in w.items} & {i.prompt for i in f.items}
    assert all(it.answer.strip() not in it.prompt for it in w.items)

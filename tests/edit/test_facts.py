"""The shipped CounterFact-style facts file: it loads, follows the protocol's rules, converts to
edit requests, and a malformed file is refused with a clear DataError."""

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from groundwork.edit.facts import (
    FACTS_FILE,
    FactRecord,
    facts_metadata,
    load_facts,
    parse_facts,
    to_requests,
)
from groundwork.edit.request import EditRequest
from groundwork.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records() -> list[FactRecord]:
    return load_facts()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return json.loads(FACTS_FILE.read_text(encoding="utf-8"))


def test_the_shipped_file_has_enough_valid_records(records):
    assert len(records) >= 100  # MEMIT's 100 edits, with spares
    assert len({r.case_id for r in records}) == len(records)
    for r in records:
        for prompt in (r.prompt, *r.paraphrase_prompts, *r.generation_prompts):
            assert r.subject in prompt
        assert r.target_new.strip().casefold() != r.target_true.strip().casefold()
        assert r.target_new.startswith(" ") and r.target_true.startswith(" ")
        assert r.neighbourhood and r.reference_texts and r.paraphrase_prompts
        for n in r.neighbourhood:
            assert n.subject != r.subject and n.subject in n.prompt
            assert n.target_true.strip() != r.target_new.strip()
        # the model's own answer starts with the true object (the "known fact" filter)
        assert r.model_answer.casefold().startswith(r.target_true.strip().casefold())


def test_records_mix_relations_and_neighbours_prefer_the_same_object(records):
    relations = {r.relation for r in records}
    assert len(relations) >= 4
    assert len({r.relation for r in records[:20]}) >= 3  # shuffled: a prefix is a mix
    # CounterFact's neighbours share the true object; where one exists it comes first
    shared = [r for r in records if r.relation == "language" and r.target_true == " Spanish"]
    assert shared
    assert all(r.neighbourhood[0].target_true == " Spanish" for r in shared)


def test_records_convert_to_edit_requests(records):
    requests = to_requests(records[:5])
    assert all(isinstance(q, EditRequest) for q in requests)
    r, q = records[0], requests[0]
    assert (q.prompt, q.subject, q.target, q.target_true) == (
        r.prompt,
        r.subject,
        r.target_new,
        r.target_true,
    )


def test_filters_and_metadata(records):
    capitals = load_facts(relations=["capital"])
    assert capitals and {r.relation for r in capitals} == {"capital"}
    assert load_facts(limit=3) == records[:3]
    with pytest.raises(ConfigError, match="unknown relations"):
        load_facts(relations=["capitol"])
    meta = facts_metadata()
    assert meta["model"] == "smollm2-135m-instruct"
    assert {"date", "script_version", "seed", "match_rule"} <= set(meta)
    assert meta["n_records"] == len(records)
    for name, rel in meta["relations"].items():
        assert rel["kept"] <= rel["candidates"]
        assert sum(r.relation == name for r in records) in (0, rel["kept"])
        assert "{}" in rel["prompt"]


# --- malformed files ----------------------------------------------------------------------------


def broken(raw: dict[str, Any], change) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    change(data)
    return data


def first(data: dict[str, Any]) -> dict[str, Any]:
    return data["records"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("records"), "'records'"),
        (lambda d: d.update(format=99), "unknown format"),
        (lambda d: first(d).update(subject="Atlantis"), "does not occur"),
        (lambda d: first(d).update(target_new=first(d)["target_true"]), "is the true object"),
        (lambda d: first(d).update(target_new="Rome"), "leading space"),
        (lambda d: first(d).update(prompt=first(d)["prompt"] + " "), "ends in whitespace"),
        (lambda d: first(d).update(case_id="7"), "case_id"),
        (lambda d: first(d).pop("paraphrase_prompts"), "paraphrase_prompts"),
        (
            lambda d: first(d)["neighbourhood"].append(
                {
                    "subject": first(d)["subject"],
                    "prompt": first(d)["prompt"],
                    "target_true": first(d)["target_true"],
                }
            ),
            "own subject",
        ),
        (
            lambda d: first(d)["neighbourhood"][0].update(target_true=first(d)["target_new"]),
            "new target",
        ),
        (lambda d: d["records"][1].update(case_id=first(d)["case_id"]), "repeated"),
        (lambda d: first(d).update(relation="colour"), "reference texts|unknown relation"),
    ],
)
def test_malformed_data_is_refused(raw, change, message):
    parse_facts(raw)  # the original is fine
    with pytest.raises(DataError, match=message):
        parse_facts(broken(raw, change), "facts.json")


def test_unreadable_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_facts(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"records": [', encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        load_facts(bad)
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="JSON object"):
        load_facts(bad)


# --- the build script's match rule --------------------------------------------------------------


@pytest.fixture(scope="module")
def build_script() -> Any:
    spec = importlib.util.spec_from_file_location("build_facts", ROOT / "scripts/build_facts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_match_rule(build_script):
    match = build_script.matched_spelling
    assert match(" Paris, the capital", "Paris") == "Paris"
    assert match(" paris.", "Paris") == "Paris"  # case-insensitive
    assert match(" Paris", "Paris") == "Paris"
    assert match(" Parisian food", "Paris") is None  # a whole word, not a prefix
    assert match(" the capital of France", "Paris") is None
    assert match(" Brasília is", "Brasilia") == "Brasilia"  # accents dropped
    assert match(" Kiev.\n", "Kyiv") == "Kiev"  # an accepted spelling
    assert match(" North Korea", "North America") is None  # the whole object must match
    assert match(" North America.", "North America") == "North America"


# --- on SmolLM2 itself ----------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_knows_the_facts_and_is_unedited(records):
    from groundwork import pretrained
    from groundwork.edit.metrics import evaluate_edits, generate_texts
    from groundwork.generate.config import GenerationConfig

    torch.set_num_threads(1)
    pre = pretrained.load("smollm2-135m-instruct")
    sample = records[:30]
    # the stored greedy answers are what the model says
    greedy = GenerationConfig(max_new_tokens=4, temperature=0.0)
    texts = generate_texts(pre.model, pre.tokenizer, [r.prompt for r in sample[:8]], greedy)
    for r, text in zip(sample[:8], texts, strict=True):
        assert text[len(r.prompt) :].startswith(r.target_true)
    summary = evaluate_edits(pre.model, pre.tokenizer, sample, generation=False)
    assert summary["efficacy_score"]["mean"] == 0.0  # it prefers the true object everywhere
    assert summary["paraphrase_score"]["mean"] is not None
    assert summary["paraphrase_score"]["mean"] <= 0.2
    assert summary["neighbourhood_score"]["mean"] is not None
    assert summary["neighbourhood_score"]["mean"] >= 0.9

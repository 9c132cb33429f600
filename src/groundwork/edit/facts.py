"""CounterFact-style edit records on facts SmolLM2-135M actually knows, and their loader.

CounterFact (Meng et al. 2022, section 3 and appendix) turns a known fact
(subject, relation, object) into a *counterfactual* rewrite request and the prompts that measure
it. :data:`FACTS_FILE` (``smollm2_facts.json``, written by ``scripts/build_facts.py``) holds such
records for six relations (country -> capital, official language, continent, currency;
city -> country; book -> author), kept only when SmolLM2's greedy continuation of the main prompt
starts with the true object. Each :class:`FactRecord` carries:

* the **requested rewrite**: the main prompt (``"The capital of France is"``), the subject, the
  new target (another object of the same relation, ``" Rome"``) and the true one
  (``" Paris"``, spelt as the model answers) -- :meth:`FactRecord.request` makes it an
  :class:`~groundwork.edit.request.EditRequest`;
* **paraphrase prompts**: the same relation worded differently (generalisation);
* **neighbourhood prompts**: the main prompt about *other* subjects of the same relation, each
  with its own true object (specificity: an edit should not spread to them). CounterFact takes
  neighbours that share the edited fact's (relation, true object); a capital belongs to one
  country only, so the builder takes those first and fills up with other subjects of the same
  relation, never one whose true object is the new target;
* **generation prompts** (fluency and consistency of free text about the subject) and
  **reference texts**: what the *unedited* model writes about subjects whose true object is the
  new target (the offline stand-in for CounterFact's Wikipedia snippets; see
  :mod:`groundwork.edit.metrics`).

References:
    - Meng et al. 2022, "Locating and Editing Factual Associations in GPT" (ROME; CounterFact,
      arXiv 2202.05262).
    - Docs: chapter 19, "Model editing".
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundwork.edit.request import EditRequest
from groundwork.errors import ConfigError, DataError

FACTS_FILE = Path(__file__).with_name("smollm2_facts.json")
"""The shipped records (rebuilt by ``python scripts/build_facts.py``)."""

FORMAT = 1
"""Version of the file's layout that :func:`load_facts` reads."""


@dataclass(frozen=True)
class Neighbour:
    """A prompt about another subject of the same relation, and that subject's true object."""

    subject: str
    prompt: str
    target_true: str


@dataclass(frozen=True)
class FactRecord:
    """One CounterFact-style case: a rewrite request and the prompts that measure it.

    Attributes:
        case_id: Position in the file (records are shuffled across relations, so the first
            ``n`` are a mix of relations).
        relation: Relation name (``"capital"``, ``"language"``, ...).
        subject: The entity the fact is about; occurs in every prompt below.
        prompt: The main prompt, ending where the object begins.
        target_new: The counterfactual object, with its leading space (``" Rome"``).
        target_true: The true object as the model spells it (``" Paris"``).
        model_answer: The unedited model's greedy continuation of ``prompt`` (first line).
        paraphrase_prompts: The relation worded differently, about the same subject.
        neighbourhood: Prompts about other subjects, with their own true objects.
        generation_prompts: Open prompts about the subject, for generated text.
        reference_texts: Unedited-model text about subjects whose true object is
            ``target_new`` (for the consistency score).
    """

    case_id: int
    relation: str
    subject: str
    prompt: str
    target_new: str
    target_true: str
    model_answer: str
    paraphrase_prompts: tuple[str, ...]
    neighbourhood: tuple[Neighbour, ...]
    generation_prompts: tuple[str, ...]
    reference_texts: tuple[str, ...]

    def request(self) -> EditRequest:
        """The rewrite as an :class:`EditRequest` (``target_true`` filled in)."""
        return EditRequest(
            prompt=self.prompt,
            subject=self.subject,
            target=self.target_new,
            target_true=self.target_true,
        )


def to_requests(records: Iterable[FactRecord]) -> list[EditRequest]:
    """The rewrite requests of ``records``, in order (e.g. a batch for MEMIT)."""
    return [record.request() for record in records]


# --- reading and validating ------------------------------------------------------------------


def _fail(where: str, message: str) -> DataError:
    return DataError(f"{where}: {message} (rebuild it with `python scripts/build_facts.py`)")


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def _strings(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not value:
        raise _fail(where, f"field {key!r} must be a non-empty list of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _fail(where, f"field {key!r} holds {item!r}, not a non-empty string")
    return tuple(value)


def _prompt(text: str, subject: str, where: str) -> None:
    if subject not in text:
        raise _fail(where, f"the subject {subject!r} does not occur in the prompt {text!r}")
    if text != text.rstrip():
        raise _fail(where, f"the prompt {text!r} ends in whitespace")


def _target(text: str, key: str, where: str) -> None:
    if not text.startswith(" ") or not text.strip():
        raise _fail(where, f"{key} {text!r} must be a word with its leading space, like ' Rome'")


def _same_object(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _neighbour(obj: Any, record_subject: str, target_new: str, where: str) -> Neighbour:
    if not isinstance(obj, dict):
        raise _fail(where, f"a neighbour must be an object, got {obj!r}")
    subject = _string(obj, "subject", where)
    prompt = _string(obj, "prompt", where)
    target_true = _string(obj, "target_true", where)
    _prompt(prompt, subject, where)
    _target(target_true, "target_true", where)
    if subject == record_subject:
        raise _fail(where, f"the record's own subject {subject!r} is among its neighbours")
    if _same_object(target_true, target_new):
        raise _fail(
            where,
            f"neighbour {subject!r} has the new target {target_new!r} as its true object: "
            "it cannot tell whether the edit spread",
        )
    return Neighbour(subject=subject, prompt=prompt, target_true=target_true)


def _record(obj: Any, references: Mapping[str, Any], where: str) -> FactRecord:
    if not isinstance(obj, dict):
        raise _fail(where, f"a record must be an object, got {type(obj).__name__}")
    case_id = obj.get("case_id")
    if isinstance(case_id, bool) or not isinstance(case_id, int) or case_id < 0:
        raise _fail(where, f"case_id must be a non-negative integer, got {case_id!r}")
    relation = _string(obj, "relation", where)
    subject = _string(obj, "subject", where)
    prompt = _string(obj, "prompt", where)
    target_new = _string(obj, "target_new", where)
    target_true = _string(obj, "target_true", where)
    answer = obj.get("model_answer")
    if not isinstance(answer, str):
        raise _fail(where, f"field 'model_answer' must be a string, got {answer!r}")
    paraphrases = _strings(obj, "paraphrase_prompts", where)
    generation = _strings(obj, "generation_prompts", where)
    for text in (prompt, *paraphrases, *generation):
        _prompt(text, subject, where)
    _target(target_new, "target_new", where)
    _target(target_true, "target_true", where)
    if _same_object(target_new, target_true):
        raise _fail(where, f"target_new {target_new!r} is the true object {target_true!r}")
    raw_neighbours = obj.get("neighbourhood")
    if not isinstance(raw_neighbours, list) or not raw_neighbours:
        raise _fail(where, "field 'neighbourhood' must be a non-empty list of neighbours")
    neighbours = tuple(_neighbour(n, subject, target_new, where) for n in raw_neighbours)
    per_relation = references.get(relation)
    texts = per_relation.get(target_new) if isinstance(per_relation, dict) else None
    if texts is None:
        raise _fail(where, f"no reference texts for ({relation!r}, {target_new!r})")
    reference_texts = _strings({"texts": texts}, "texts", where)
    record = FactRecord(
        case_id=case_id,
        relation=relation,
        subject=subject,
        prompt=prompt,
        target_new=target_new,
        target_true=target_true,
        model_answer=answer,
        paraphrase_prompts=paraphrases,
        neighbourhood=neighbours,
        generation_prompts=generation,
        reference_texts=reference_texts,
    )
    try:
        record.request()
    except ConfigError as err:
        raise _fail(where, str(err)) from err
    return record


def parse_facts(data: Any, source: str = "<facts>") -> list[FactRecord]:
    """Validate parsed facts-file contents and build the records.

    Args:
        data: The parsed JSON (see ``scripts/build_facts.py`` for its layout).
        source: Name used in error messages (the file's path).

    Raises:
        DataError: anything missing or malformed (wrong types, a subject absent from a prompt,
            a new target equal to the true object, a record among its own neighbours, repeated
            case ids, missing reference texts).
    """
    if not isinstance(data, dict):
        raise _fail(source, f"the file must hold a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise _fail(source, f"unknown format {data.get('format')!r}; this loader reads {FORMAT}")
    relations = data.get("relations")
    if not isinstance(relations, dict) or not relations:
        raise _fail(source, "field 'relations' must be a non-empty object")
    references = data.get("references")
    if not isinstance(references, dict):
        raise _fail(source, "field 'references' must be an object")
    raw = data.get("records")
    if not isinstance(raw, list) or not raw:
        raise _fail(source, "field 'records' must be a non-empty list")
    records: list[FactRecord] = []
    seen: set[int] = set()
    for i, obj in enumerate(raw):
        where = f"{source}: record {i}"
        record = _record(obj, references, where)
        if record.relation not in relations:
            raise _fail(where, f"unknown relation {record.relation!r}")
        if record.case_id in seen:
            raise _fail(where, f"case_id {record.case_id} is repeated")
        seen.add(record.case_id)
        records.append(record)
    return records


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DataError(f"the facts file {path} does not exist") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(str(path), f"not valid JSON ({err})") from err


def load_facts(
    path: str | Path | None = None,
    *,
    relations: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[FactRecord]:
    """Read and validate edit records (the shipped :data:`FACTS_FILE` by default).

    Args:
        path: A facts file written by ``scripts/build_facts.py``.
        relations: Keep only these relations (``None``: all).
        limit: Keep the first ``limit`` records (after the relation filter); records are
            shuffled across relations, so a prefix is a mix of them.

    Raises:
        DataError: the file is missing, not JSON, or malformed (see :func:`parse_facts`).
        ConfigError: an unknown relation name, or a negative limit.
    """
    path = FACTS_FILE if path is None else Path(path)
    records = parse_facts(_read(path), str(path))
    if relations is not None:
        known = {r.relation for r in records}
        unknown = sorted(set(relations) - known)
        if unknown:
            raise ConfigError(f"unknown relations {unknown}: the file has {sorted(known)}")
        records = [r for r in records if r.relation in relations]
    if limit is not None:
        if limit < 0:
            raise ConfigError(f"limit must be >= 0, got {limit}")
        records = records[:limit]
    return records


def facts_metadata(path: str | Path | None = None) -> dict[str, Any]:
    """The file's header: model, date, script version, seed, match rule and, per relation, its
    templates and how many candidates were asked and kept (everything but the records)."""
    path = FACTS_FILE if path is None else Path(path)
    data = _read(path)
    if not isinstance(data, dict):
        raise _fail(str(path), "the file must hold a JSON object")
    return {k: v for k, v in data.items() if k not in ("records", "references")}

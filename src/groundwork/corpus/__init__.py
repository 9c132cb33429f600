"""Real data for Groundwork: sources, fetching, cleaning, deduplication, splits and token shards.

Chapter 7 of the docs, "Data for large models", walks through every module here.
"""

from groundwork.corpus.clean import normalize_text, read_text_file
from groundwork.corpus.dedup import (
    Duplicate,
    MinHasher,
    estimate_jaccard,
    exact_dedup,
    jaccard,
    lsh_params,
    minhash_dedup,
    shingles,
)
from groundwork.corpus.document import Document
from groundwork.corpus.documents import (
    Corpus,
    documents_from_files,
    load_corpus,
    load_documents,
    load_examples,
)
from groundwork.corpus.fetch import fetch, home, list_sources, read_manifest, source_dir
from groundwork.corpus.shards import TokenShards, prepare_shards, prepare_source, read_meta
from groundwork.corpus.sources import SOURCES, Extract, Source, get_source
from groundwork.corpus.splits import DEFAULT_FRACTIONS, split_documents
from groundwork.corpus.stats import corpus_stats

near_dedup = minhash_dedup

__all__ = [
    "DEFAULT_FRACTIONS",
    "SOURCES",
    "Corpus",
    "Document",
    "Duplicate",
    "Extract",
    "MinHasher",
    "Source",
    "TokenShards",
    "corpus_stats",
    "documents_from_files",
    "estimate_jaccard",
    "exact_dedup",
    "fetch",
    "get_source",
    "home",
    "jaccard",
    "list_sources",
    "load_corpus",
    "load_documents",
    "load_examples",
    "lsh_params",
    "minhash_dedup",
    "near_dedup",
    "normalize_text",
    "prepare_shards",
    "prepare_source",
    "read_manifest",
    "read_meta",
    "read_text_file",
    "shingles",
    "source_dir",
    "split_documents",
]

"""The retrieval commands: `groundwork retrieve` (search a corpus), `groundwork rag` (answer from
retrieved passages) and `groundwork agent` (a ReAct agent with a calculator and a search tool).
Chapter 15 (Prompting, agents and retrieval).

A corpus is a text source (``wiki-sample``, ``shakespeare``, ...) or text files; its documents are
cut into overlapping passages of words (:func:`~groundwork.retrieval.chunking.chunk_documents`)
and indexed with BM25, MiniLM embeddings, or both fused by reciprocal rank.
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from groundwork.errors import ConfigError

Method = Literal["bm25", "dense", "hybrid"]


def load_passages(corpus: str, *, size: int = 100, overlap: int = 20) -> list[Any]:
    """The passages of a text source or of text files (a file, or a folder of ``*.txt``).

    Raises:
        DataError, UnknownNameError: an unknown source or a missing file.
    """
    from groundwork.corpus.documents import documents_from_files, load_documents
    from groundwork.corpus.sources import SOURCES
    from groundwork.retrieval.chunking import chunk_documents

    path = Path(corpus)
    if corpus not in SOURCES and path.exists():
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        docs = documents_from_files(files)
    else:
        docs = load_documents(corpus)
    return chunk_documents(docs, size=size, overlap=overlap)


def build_retriever(passages: Sequence[Any], method: Method = "bm25") -> Any:
    """A retriever over the passages' texts: BM25, MiniLM (exact cosine), or both fused."""
    from groundwork.retrieval.bm25 import BM25Retriever

    texts = [p.text for p in passages]
    if method not in ("bm25", "dense", "hybrid"):
        raise ConfigError(f"--method must be bm25, dense or hybrid, got {method!r}")
    if method == "bm25":
        return BM25Retriever(texts)
    from groundwork.pretrained import load
    from groundwork.retrieval.dense import DenseRetriever

    minilm = load("all-minilm-l6-v2")
    dense = DenseRetriever(minilm.model, minilm.tokenizer, texts)
    if method == "dense":
        return dense
    from groundwork.retrieval.fusion import HybridRetriever

    return HybridRetriever([BM25Retriever(texts), dense])


def _shorten(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def retrieve(
    query: str,
    corpus: str = "wiki-sample",
    method: Method = "bm25",
    k: int = 5,
    chunk_words: int = 100,
) -> None:
    """Search a corpus: the top passages for a query, with their scores.

    Args:
        query: What to search for.
        corpus: A text source (wiki-sample, shakespeare, ...) or text files (a file or folder).
        method: bm25 (Okapi BM25), dense (MiniLM cosine), or hybrid (reciprocal rank fusion).
        k: How many passages to show.
        chunk_words: Words per passage (passages overlap by a fifth).
    """
    if not query.strip():
        raise ConfigError("the query is empty: give some words to search for")
    passages = load_passages(corpus, size=chunk_words, overlap=chunk_words // 5)
    hits = build_retriever(passages, method).retrieve(query, k)
    for rank, hit in enumerate(hits, 1):
        p = passages[hit.index]
        print(f"{rank}. {p.doc_id} #{p.index}  score {hit.score:.4f}\n   {_shorten(p.text)}")


def model_completer(
    model: Any,
    tokenizer: Any,
    *,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    batch_size: int = 8,
) -> Callable[[Sequence[str]], list[str]]:
    """Prompts in, greedy completions out (cut before any of ``stop``)."""
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.stream import generate_texts

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, stop_strings=tuple(stop)
    )

    def complete(prompts: Sequence[str]) -> list[str]:
        return generate_texts(model, tokenizer, prompts, config, batch_size=batch_size)

    return complete


def chat_renderer(template: str | None) -> Callable[[list[dict[str, str]]], str] | None:
    """Messages -> the model's prompt with its chat template (``None``: no template)."""
    if template is None:
        return None
    from groundwork.generate.chat import render_chat

    def render(messages: list[dict[str, str]]) -> str:
        return render_chat(template, messages)

    return render


def rag(
    model: str,
    question: str,
    corpus: str = "wiki-sample",
    method: Method = "bm25",
    k: int = 3,
    chunk_words: int = 100,
    max_new_tokens: int = 48,
) -> None:
    """Answer a question from retrieved passages (retrieve-then-read), citing the passage used.

    Args:
        model: A run directory or a named model (smollm2-135m-instruct).
        question: The question.
        corpus: A text source (wiki-sample, shakespeare, ...) or text files (a file or folder).
        method: bm25, dense (MiniLM) or hybrid retrieval.
        k: Passages put in the prompt (0: answer without retrieval).
        chunk_words: Words per passage.
        max_new_tokens: The longest answer, in tokens.
    """
    from groundwork.recipes.generate import load_model
    from groundwork.retrieval.rag import RAGPipeline

    if not question.strip():
        raise ConfigError("the question is empty")
    net, tokenizer, template = load_model(model)
    passages = load_passages(corpus, size=chunk_words, overlap=chunk_words // 5)
    retriever = build_retriever(passages, method) if k > 0 else None
    complete = model_completer(net, tokenizer, max_new_tokens=max_new_tokens, stop=("\n\n",))
    pipeline = RAGPipeline(
        retriever, [p.text for p in passages], complete, render=chat_renderer(template), k=k
    )
    result = pipeline.answer(question)
    print(f"Answer: {result.answer}")
    for n, (index, score) in enumerate(zip(result.passages, result.scores, strict=True), 1):
        p = passages[index]
        mark = " (cited)" if n in result.citations else ""
        print(f"[{n}] {p.doc_id} #{p.index}  score {score:.3f}{mark}\n    {_shorten(p.text, 200)}")


def build_agent(
    net: Any,
    tokenizer: Any,
    *,
    passages: Sequence[Any] | None = None,
    retriever: Any = None,
    max_steps: int = 6,
    max_new_tokens: int = 64,
    tools: Sequence[str] = ("calculator", "search", "lookup"),
    search_k: int = 2,
    observation_chars: int = 1200,
) -> Any:
    """A ReAct agent over ``net``: greedy completions, the calculator, and (with passages and a
    retriever) search (``search_k`` whole passages per search) and lookup, among ``tools``;
    the worked examples of the tools it has."""
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.stream import generate_texts
    from groundwork.prompting.agents import CALCULATOR_EXAMPLE, SEARCH_EXAMPLE, ReActAgent
    from groundwork.prompting.tools import (
        SearchState,
        ToolRegistry,
        calculator_tool,
        lookup_tool,
        search_tool,
    )

    registry = ToolRegistry()
    examples = []
    if "calculator" in tools:
        registry.register(calculator_tool())
        examples.append(CALCULATOR_EXAMPLE)
    if passages is not None and retriever is not None and "search" in tools:
        state = SearchState()
        texts = [p.text for p in passages]
        registry.register(
            search_tool(retriever, texts, k=search_k, max_chars=observation_chars, state=state)
        )
        if "lookup" in tools:
            registry.register(lookup_tool(state))
        examples.append(SEARCH_EXAMPLE)

    def complete(prompt: str, stop: Sequence[str]) -> str:
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, temperature=0.0, stop_strings=tuple(stop)
        )
        return generate_texts(net, tokenizer, [prompt], config)[0]

    return ReActAgent(
        complete,
        registry,
        max_steps=max_steps,
        examples=examples,
        max_observation_chars=observation_chars,
        guided=True,
    )


def agent(
    model: str,
    question: str,
    corpus: str | None = "wiki-sample",
    max_steps: int = 6,
    max_new_tokens: int = 64,
) -> None:
    """Answer a question with a ReAct agent (thought, action, observation) that can use a
    calculator and search a corpus; prints the whole trace.

    Args:
        model: A run directory or a named model (smollm2-135m-instruct).
        question: The question.
        corpus: The corpus the search tool reads (a text source or text files); "none": the
            calculator only.
        max_steps: Model turns before giving up.
        max_new_tokens: The longest model turn, in tokens.
    """
    from groundwork.recipes.generate import load_model

    if not question.strip():
        raise ConfigError("the question is empty; ask the agent something")
    net, tokenizer, _ = load_model(model)
    passages = load_passages(corpus) if corpus and corpus.lower() != "none" else None
    retriever = build_retriever(passages) if passages else None
    runner = build_agent(
        net,
        tokenizer,
        passages=passages,
        retriever=retriever,
        max_steps=max_steps,
        max_new_tokens=max_new_tokens,
    )
    transcript = runner.run(question)
    print(transcript.render())

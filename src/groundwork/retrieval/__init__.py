"""Retrieval: BM25 and dense (MiniLM) search, rank fusion, retrieve-then-read (RAG), kNN-LM.

Chapter 15 (Prompting, agents and retrieval).
"""

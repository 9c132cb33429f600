"""End-to-end programs above the engine: each `groundwork` command is a typed function here
(pretrain, classify, ngram, word2vec, evaluate, generate, data, models, ...), callable from Python
as well as from the command line (:mod:`groundwork.cli` only parses and dispatches)."""

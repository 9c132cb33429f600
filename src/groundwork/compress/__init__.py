"""Compression: model transforms that make a trained model smaller or faster to run.

Quantisation (round-to-nearest int8/int4/NF4, GPTQ, AWQ, LLM.int8(), SmoothQuant), weight-only
quantised linear layers for fast CPU decoding, pruning (magnitude, Wanda, 2:4, attention heads)
and knowledge distillation. Each transform is a function applied from outside the model
(``quantize_x(model, ...) -> model``), never a subclass of it. Chapter 18, "Efficient inference
and compression".
"""

"""Prompting: few-shot prompts and their calibration, chain-of-thought with self-consistency,
and ReAct agents with tools.

Chapter 15 (Prompting, agents and retrieval).
"""

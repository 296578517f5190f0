"""Downstream tasks: seq2seq fine-tuning (summarization, QG, QA, dialog), GLM's cloze NLU and text
infilling, UniLMv2's classification and extractive QA."""

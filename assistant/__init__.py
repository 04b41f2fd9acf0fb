"""Scholia's question-answering service: validate → condense → retrieve → pack → generate → verify."""

from assistant.offline import apply_offline_env

apply_offline_env()

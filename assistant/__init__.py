"""Scholia's question-answering service: validate → condense → retrieve → pack → generate → verify."""

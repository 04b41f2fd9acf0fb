"""The bottom layer: settings and the offline environment, importing no other Scholia package.

Imports run one way: eval → assistant → ingest → scholia.
"""

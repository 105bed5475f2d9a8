"""Conformance fixtures: tiny random-weight models of each architecture family lynx hooks."""

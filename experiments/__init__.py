"""Experiments built on the project's CLIs: ``python -m experiments replicate`` (does ALUM help?)."""

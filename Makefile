# The two commands the README opens with.
.PHONY: serve test lint install install-test

serve: install          ## install and run the node on its embedded defaults (SQLite, CPU model)
	.venv/bin/radground serve

test: install-test      ## install (with the DICOM peers and validators) and run every test
	.venv/bin/python -m pytest

lint: install-test      ## ruff (rules and line length from pyproject.toml) and mypy on the six packages
	.venv/bin/ruff check .
	.venv/bin/mypy

install:
	.ci/bootstrap

install-test:
	.ci/bootstrap --test

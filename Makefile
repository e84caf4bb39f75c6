# The two commands the README opens with.
.PHONY: serve test install install-test

serve: install          ## install and run the node on its embedded defaults (SQLite, CPU model)
	.venv/bin/radground serve

test: install-test      ## install (with the DICOM peers and validators) and run every test
	.venv/bin/python -m pytest

install:
	.ci/bootstrap

install-test:
	.ci/bootstrap --test

"""``python -m lprnet``: the ``lprnet`` command, for environments where the package is importable but not installed
(e.g. ``PYTHONPATH=src`` on a machine without network or a recent setuptools)."""

from lprnet.cli import main

if __name__ == "__main__":
    main()

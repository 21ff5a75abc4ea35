"""Allows `python -m snapfs`."""

from snapfs.cli.main import main

raise SystemExit(main())

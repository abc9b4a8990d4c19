"""``python -m benchmarks.corpus``: see :mod:`benchmarks.corpus.run`."""

from benchmarks.corpus.run import main

raise SystemExit(main())

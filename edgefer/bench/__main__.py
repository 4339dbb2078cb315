"""``python -m edgefer.bench`` is ``edgefer-bench``."""

from edgefer.bench.cli import main

raise SystemExit(main())

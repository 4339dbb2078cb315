"""edgefer-bench: the source paper's edge table (its Table 14) measured on this machine, and
what users get from edgefer beside a peer.

One module per concern: :mod:`~edgefer.bench.cli` (the command line and its modes),
:mod:`~edgefer.bench.dataset` (the paper's table), :mod:`~edgefer.bench.pipeline` (the
daemon's per-frame path by stage), :mod:`~edgefer.bench.faces` and :mod:`~edgefer.bench.clip`
(labelled photos and a composited clip through edgefer and fer, with
:mod:`~edgefer.bench.lanes`), :mod:`~edgefer.bench.timing` (the one timing runner),
:mod:`~edgefer.bench.memory`, :mod:`~edgefer.bench.host`, :mod:`~edgefer.bench.stats`,
:mod:`~edgefer.bench.models`, :mod:`~edgefer.bench.clips` (composited clips),
:mod:`~edgefer.bench.report` (Markdown), :mod:`~edgefer.bench.output` (files and console),
:mod:`~edgefer.bench.plots` and :mod:`~edgefer.bench.peers.fer` (everything about fer).

The daemon never imports this package, and this package never imports the training one.
"""

"""edgefer: on-device facial-emotion monitoring that publishes only mood summaries."""

__version__ = "0.1.0"

#: The four emotions edgefer reports, in the output order of every shipped model.
LABELS: tuple[str, ...] = ("angry", "happy", "sad", "neutral")

"""Training, export and explanation of edgefer's models (the ``train`` extra).

The daemon never imports this package: it needs TensorFlow, which a Pi does not.
"""

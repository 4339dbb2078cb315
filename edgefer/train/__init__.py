"""Training, export and explanation of edgefer's models (the ``train`` extra).

The daemon never imports this package: it needs TensorFlow, which a Pi does not.
"""

# The names ``edgefer-train --arch`` accepts; here rather than in ``models`` so that the
# command line can list them without importing Keras.
ARCHITECTURES = ("paper", "edgefer", "edgefer-mirror-full", "edgefer-dense", "edgefer-dense-mirror")

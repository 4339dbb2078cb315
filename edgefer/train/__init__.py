"""Training, export and explanation of edgefer's models (the ``train`` extra).

One module per concern: :mod:`.recipe` (a run's settings), :mod:`.data` (the faces and their
augmentation), :mod:`.teachers` (distillation targets), :mod:`.warmstart` (starting from trained
weights), :mod:`.fit` (the resumable training loop), :mod:`.average` (weight averages, precise
batch norm), :mod:`.finalize` and :mod:`.export` (TFLite files and their scores), :mod:`.soup`,
:mod:`.compare`, and :mod:`.reproduce`, the stages behind the shipped default, which
``edgefer-train reproduce`` chains (docs/training.md). The daemon never imports this package: it
needs TensorFlow, which a Pi does not.
"""

# The names ``edgefer-train fit --arch`` accepts: the networks behind the shipped files and their
# teachers, and the paper's. Here rather than in ``models`` so that the command line can list
# them without importing Keras.
ARCHITECTURES = ("paper", "edgefer", "edgefer-mirror-full", "edgefer-dense", "edgefer-dense-mirror")

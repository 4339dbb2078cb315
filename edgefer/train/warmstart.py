"""Starting a network from trained weights: a fine-tune of the same architecture, or a plain
network put into a mirrored pair's trunk (as it is, or with its stage-opening convs factored).

The shipped lineage needs each of these (edgefer/train/reproduce.py): every round after the
first starts from the round before, edgefer-dense enters its mirrored pair unchanged, and the
previous default's pair (edgefer-mirror-full) started from a plain edgefer by factoring.
"""

from __future__ import annotations

import numpy as np

from edgefer.train.recipe import Recipe, TrainError


def start_from(model, recipe: Recipe, log=print) -> None:
    """Load ``recipe.init_from``'s weights into a freshly built ``model`` (see :func:`copy_weights`)."""
    if not recipe.init_from:
        return
    from pathlib import Path

    from edgefer.train.models import load

    if not Path(recipe.init_from).exists():
        raise TrainError(f"--init-from {recipe.init_from}: no such file")
    src = load(recipe.init_from)
    copy_weights(src, model, source=recipe.init_from)
    how = ""
    if _into_trunk(src, model):
        how = (
            "; as the mirrored pair's trunk, unchanged"
            if _same_shape(src, model.get_layer("trunk"))
            else "; each stage's opening conv factored into the trunk's rank by a truncated SVD"
        )
    log(f"starting from the weights of {recipe.init_from}{how}")


def _into_trunk(src, dst) -> bool:
    """Whether starting ``dst`` from ``src`` puts a plain network into ``dst``'s mirrored trunk."""
    from edgefer.train.models import trunk_of

    return trunk_of(dst) is not None and trunk_of(src) is None


def _same_shape(src, dst) -> bool:
    """Whether ``src`` and ``dst`` have the same weighted layers with the same weights' shapes:
    a plain network that becomes a mirrored pair's trunk unchanged (edgefer-dense-mirror)."""
    shapes = [
        {layer.name: [tuple(w.shape) for w in layer.weights] for layer in net.layers if layer.weights}
        for net in (src, dst)
    ]
    return shapes[0] == shapes[1]


def _factored(dst) -> bool:
    """Whether ``dst`` nests a trunk whose stage-opening convs are factored (``_dwf``, ``_pwf``)."""
    from edgefer.train.models import every_layer

    return any(layer.name.endswith("_dwf") for layer in every_layer(dst))


def factor_into(src, dst, source: str = "the source model") -> None:
    """Start ``dst``, an edgefer network of ``src``'s width whose stage-opening convs are
    factored, from ``src``: every other layer is copied, and each full 3x3 conv becomes its best
    approximation of ``dst``'s rank, input channel by input channel (a truncated SVD of that
    channel's 9 x outputs kernel, split evenly between the depthwise and pointwise factors).

    The start is then ``src`` up to what the dropped singular values carried, so fine-tuning
    repairs a small error instead of relearning the network."""
    theirs = {layer.name: layer for layer in src.layers if layer.weights}
    ours = {layer.name: layer for layer in dst.layers if layer.weights}
    opened = {name[: -len("_dwf")] for name in ours if name.endswith("_dwf")}
    expected = (set(ours) - {f"{b}_{part}" for b in opened for part in ("dwf", "pwf")}) | {f"{b}_conv" for b in opened}
    if set(theirs) != expected:
        raise TrainError(f"{source}: not the same layers as the {dst.name} network with full convs; cannot be factored")
    for name, layer in ours.items():
        if name.endswith("_pwf"):
            continue  # written with its depthwise half
        if name.endswith("_dwf"):
            block = name[: -len("_dwf")]
            (full,) = theirs[f"{block}_conv"].get_weights()
            (dw,) = layer.get_weights()
            kh, kw, cin, rank = dw.shape
            if full.shape[:3] != (kh, kw, cin):
                raise TrainError(
                    f"{source}: layer {block}_conv has kernel {full.shape}, the {dst.name} network reads {cin} channels"
                )
            pw = np.zeros((1, 1, cin * rank, full.shape[3]), np.float32)
            for c in range(cin):
                u, sv, vt = np.linalg.svd(full[:, :, c, :].reshape(kh * kw, -1), full_matrices=False)
                root = np.sqrt(sv[:rank])
                dw[:, :, c, :] = (u[:, :rank] * root).reshape(kh, kw, rank)
                pw[0, 0, c * rank : (c + 1) * rank] = root[:, None] * vt[:rank]
            layer.set_weights([dw])
            ours[f"{block}_pwf"].set_weights([pw])
            continue
        w = theirs[name].get_weights()
        if [a.shape for a in w] != [a.shape for a in layer.get_weights()]:
            raise TrainError(f"{source}: layer {name} is not the width of the {dst.name} network's")
        layer.set_weights(w)


def copy_weights(src, dst, source: str = "the source model") -> None:
    """Copy ``src``'s weights into ``dst`` layer by layer, matched by name; a plain ``src`` goes
    into a mirrored ``dst``'s trunk, factored by :func:`factor_into` when the trunk's
    stage-opening convs are. Any mismatch is an error naming the layer."""
    if _into_trunk(src, dst):
        trunk = dst.get_layer("trunk")
        if _factored(dst):
            factor_into(src, trunk, source)
            return
        if not _same_shape(src, trunk):
            raise TrainError(f"{source}: not the shape of the {dst.name} network's trunk")
        dst = trunk
    theirs = {layer.name: layer for layer in src.layers if layer.weights}
    ours = {layer.name: layer for layer in dst.layers if layer.weights}
    if set(theirs) != set(ours):
        odd = sorted(set(theirs) ^ set(ours))
        raise TrainError(f"{source}: layers {', '.join(odd)} are not in both it and the {dst.name} model")
    for name, layer in ours.items():
        w = theirs[name].get_weights()
        got, want = [a.shape for a in w], [a.shape for a in layer.get_weights()]
        if got != want:
            raise TrainError(f"{source}: layer {name} has weights of shapes {got}, the {dst.name} model needs {want}")
        layer.set_weights(w)

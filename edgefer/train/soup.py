"""``edgefer-train soup``: the weights of finished models of one architecture averaged, shipped
only when the average beats the best of them on validation."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgefer.train.average import WeightAverage, average_if_better
from edgefer.train.data import train_and_validation, validate
from edgefer.train.finalize import finalize
from edgefer.train.recipe import Recipe, TrainError


def soup(
    ingredients: list[str],
    recipe: Recipe,
    data_dir: str | None,
    out_dir: str | Path,
    log=print,
    export_to: str | Path | None = None,
) -> dict:
    """Average the weights of finished models of one architecture (a "model soup") into
    ``out_dir`` and finalize it like a trained run.

    Models fine-tuned from one another sit in one basin, where their mean can be better than
    either; models trained apart do not, and their mean is noise. So the soup, batch norm
    recomputed on warped faces as for :func:`average_if_better`, ships only when it beats the
    best ingredient on validation; otherwise that ingredient ships. ``recipe`` gives the
    validation cut and the warps; its architecture is the ingredients'.
    """
    from edgefer.train.models import ARCHITECTURES, load

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = [load(path) for path in ingredients]
    arch = models[0].name
    if arch not in ARCHITECTURES:
        raise TrainError(f"{ingredients[0]}: a {arch!r} model, not one of {', '.join(ARCHITECTURES)}")
    shapes = [w.shape for w in models[0].get_weights()]
    for path, model in zip(ingredients[1:], models[1:], strict=True):
        if model.name != arch or [w.shape for w in model.get_weights()] != shapes:
            raise TrainError(f"{path}: not the same network as {ingredients[0]}; only one architecture can be averaged")
    recipe = Recipe(**{**asdict(recipe), "arch": arch})
    tr, va = train_and_validation(recipe, data_dir)
    if not len(va):
        raise TrainError("a soup ships only when validation prefers it; --val-fraction 0 leaves no validation part")
    scores = [validate(model, va)["accuracy"] for model in models]
    for path, score in zip(ingredients, scores, strict=True):
        log(f"{path}: validation {score:.4f}")
    best = int(np.argmax(scores))
    average = WeightAverage()
    for model in models:
        average.add(model.get_weights())
    model = models[best]
    entry = average_if_better(model, average, recipe, scores[best], tr, va, log, what="models")
    model.save(out / "best.keras")
    state = {
        "recipe": asdict(recipe),
        "epoch": 0,
        "history": {},
        "best_val": entry["validation"] if entry["kept"] else scores[best],
        "best_epoch": 0,
        "average": {**entry, "ingredients": list(ingredients), "ingredient_validation": scores},
    }
    (out / "state.json").write_text(json.dumps(state, indent=1))
    return finalize(out, data_dir, export_to, log=log)

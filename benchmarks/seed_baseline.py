"""The seed's own code paths (o2a-data/o2a-data-ml), reproduced for the benchmarks' baselines.

Not a benchmark itself (``make bench`` runs ``bench_*.py`` only). Each function says which seed
script it reproduces; what the seed did not write (its scaling step, its prediction of new images)
is reconstructed in the cheapest way its own code suggests, so that the baselines are never slower
than the seed would have been:

* :func:`crop` / :func:`paste` / :func:`step2` -- example-scripts/
  preprocessing_lokiDataset_deepLearning_step2_imagePreparation.py as written: ``skimage.io.imread``,
  channel 0, crop to the pixels darker than 245, paste centred on a white square canvas whose side is
  the largest crop of the dataset, one JPEG per image (PIL).
* :func:`scale_step` -- the scaling step the seed's 1000 px experiments rely on
  (``Trainingsdatensatz_cropped_scaled``) but which is not in its repository: ``skimage.io.imread``,
  ``skimage.transform.resize`` (its defaults), ``skimage.io.imsave``, one JPEG per image.
* :func:`prepare_cheapest` -- the same steps in one pass, each crop on its own square, PIL's LANCZOS
  resize, one JPEG: a lower bound of what the seed's preparation costs.
* :class:`LokiImageSequence` -- the ``Sequence`` of every classification_loki_deepLearning_*.py
  script: ``skimage.io.imread`` of each prepared JPEG of the batch, centre crop to the image shape,
  the grey channel repeated three times, the backbone's ``preprocess_input`` on the float batch.
  ``to_backbone_input=False`` stops after the crop (uint8 grey, what lokiml's store delivers), for
  comparisons of the same work.
* :func:`seed_classifier` -- the seed's model on its float32 3-channel input (base, avg_pool, Dropout,
  Dense softmax), sharing its layers (and so its weights) with a lokiml model, whose only extra layer
  is the first one (:class:`lokiml.models.GreyToBackboneInput`: the cast, the three channels and the
  preprocessing that the seed does in NumPy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOLERANCE = 245  # the seed's cropImageTolerance


# ----------------------------------------------------------------------------- preparation (step 2)

def crop(path: Path) -> np.ndarray:
    """The seed's reading and crop: skimage.io.imread, channel 0, the box of the pixels darker than 245."""
    import skimage.io

    img = skimage.io.imread(path)
    if img.ndim == 3:
        img = img[:, :, 0]                                   # "reduce dimension"
    mask = img < TOLERANCE                                   # crop_image(img, tol)
    return img[np.ix_(mask.any(1), mask.any(0))]


def paste(cropped: np.ndarray, side: int):
    """The seed's centring: the crop pasted in the middle of a white ``side`` x ``side`` canvas (PIL)."""
    from PIL import Image

    pil = Image.fromarray(cropped.astype("uint8"))
    w, h = pil.size
    canvas = Image.new("L", (side, side), "white")
    canvas.paste(pil, ((side - w) // 2, (side - h) // 2))
    return canvas


def step2(paths, out_dir: Path) -> None:
    """The seed's step 2 as written: every crop on a canvas of the dataset's largest crop, one JPEG each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    crops = [crop(p) for p in paths]                         # the seed reads every image first
    side = max(max(c.shape) for c in crops)                  # maxHeight(croppedImages)
    for c, p in zip(crops, paths):
        paste(c, side).save(out_dir / p.name)


def scale_step(paths, step2_dir: Path, out_dir: Path, size: int) -> None:
    """The missing scaling step, reconstructed with scikit-image: read, resize, save a JPEG per image."""
    import skimage.io
    import skimage.transform
    import skimage.util

    out_dir.mkdir(parents=True, exist_ok=True)
    for p in paths:
        img = skimage.io.imread(step2_dir / p.name)
        out = skimage.util.img_as_ubyte(skimage.transform.resize(img, (size, size)))
        skimage.io.imsave(out_dir / p.name, out, check_contrast=False)


def prepare_cheapest(paths, out_dir: Path, size: int) -> list[Path]:
    """The seed's preparation in one pass, each crop on its own square, PIL's resize: a lower bound of its cost."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        c = crop(p)
        dest = out_dir / p.name
        paste(c, max(c.shape)).resize((size, size), Image.Resampling.LANCZOS).save(dest)
        out.append(dest)
    return out


# ----------------------------------------------------------------------------- the training/prediction input

def _bounds(old_size, new_size):
    if new_size >= old_size:
        return (0, old_size)
    diff = old_size - new_size
    low = diff // 2 + diff % 2
    return (low, low + new_size)


def _crop_image(img, shape):
    left, right = _bounds(img.shape[0], shape[0])
    top, bottom = _bounds(img.shape[1], shape[1])
    img = img[left:right, top:bottom]
    return img[:, :, np.newaxis]


class LokiImageSequence:
    """The seed's Sequence (its keras.utils.Sequence base class left out: only __len__/__getitem__ are used).

    ``to_backbone_input=False`` returns the cropped uint8 grey batch (n, S, S, 1) instead of the
    float32 three-channel, preprocessed one: the same work as lokiml's input pipeline, whose model
    does the rest in its first layer.
    """

    def __init__(self, X_set, y_set, batch_size, image_shape, preprocess_input, to_backbone_input: bool = True):
        self._X = list(X_set)
        self._y = list(y_set)
        self._batch_size = batch_size
        self._image_shape = image_shape
        self._preprocess_input = preprocess_input
        self._full = to_backbone_input

    def __len__(self):
        return int(np.ceil(len(self._X) / float(self._batch_size)))

    def __getitem__(self, idx):
        import skimage.io

        batch_X = self._X[idx * self._batch_size:(idx + 1) * self._batch_size]
        batch_y = self._y[idx * self._batch_size:(idx + 1) * self._batch_size]
        x = []
        for file_name in batch_X:
            z = skimage.io.imread(file_name)
            t = _crop_image(z, self._image_shape)
            if not self._full:  # the prepared JPEGs are grey: t is (S, S, 1)
                x.append(t)
                continue
            d = t[:, :, 0]
            b = np.repeat(d[..., np.newaxis], 3, -1)
            x.append(b)
        if not self._full:
            return np.array(x), np.array(batch_y, dtype=np.int8)
        x = self._preprocess_input(np.array(x))
        return (np.array(x), np.array(batch_y, dtype=np.int8))


def seed_preprocess(model: str):
    """The backbone's preprocess_input, as the seed imported it (inception_v3's, resnet's, ...)."""
    import keras

    from lokiml import models

    bb = models.get_backbone(model)
    if bb.mode == "none":
        return lambda x: x.astype("float32")
    return lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode=bb.mode)


# ----------------------------------------------------------------------------- the model

def seed_classifier(lokiml_model):
    """The seed's classifier (float32 (S, S, 3) preprocessed input) made of ``lokiml_model``'s own layers.

    Same base, pooling, Dropout and Dense objects, so the same weights: the two models differ only by
    lokiml's first layer (grey uint8 -> the backbone's input), which the seed does in NumPy.
    """
    import keras

    from lokiml import models

    base = models.get_base(lokiml_model)
    size = int(lokiml_model.input.shape[1])
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="seed_input")
    x = base(inputs)
    for name in ("avg_pool", "dropout", "predictions"):
        x = lokiml_model.get_layer(name)(x)
    return keras.Model(inputs, x, name="seed_classifier")

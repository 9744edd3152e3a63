"""Floating-point operations of a Keras model per image, counted from its architecture.

Counted: convolutions (Conv2D, with groups; DepthwiseConv2D; SeparableConv2D) and Dense layers, as
2 x multiply-adds, from each layer's kernel and output shape. Not counted: BatchNormalization,
activations, pooling, concatenation and the input layer's preprocessing (a few % of the total for
the backbones here, and memory-bound rather than compute-bound).

A training step of a network whose every layer is trained costs about 3 x its forward pass (the
backward pass computes gradients with respect to the inputs and to the weights, each about one
forward pass): :func:`train_flops`. Used by benchmarks/gpu_check.py and benchmarks/bench_cpu_training.py.
"""

from __future__ import annotations


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _layers(layer)
        else:
            yield layer


def _spatial(shape) -> int:
    n = 1
    for d in shape[1:-1]:
        n *= int(d)
    return n


def forward_flops(model) -> int:
    """2 x multiply-adds of the convolution and dense layers of ``model`` for one image."""
    import keras

    total = 0
    for layer in _layers(model):
        try:
            out = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, keras.layers.SeparableConv2D):
            kh, kw, cin, mult = layer.depthwise_kernel.shape
            cout = layer.pointwise_kernel.shape[-1]
            total += 2 * _spatial(out) * (kh * kw * cin * mult + cin * mult * cout)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.kernel.shape
            total += 2 * _spatial(out) * kh * kw * cin * mult
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            total += 2 * _spatial(out) * kh * kw * cin_per_group * cout
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * _spatial(out) * cin * cout if len(out) > 2 else 2 * cin * cout
    return int(total)


def train_flops(model) -> int:
    """About 3 x :func:`forward_flops`: one training step of the whole network, per image."""
    return 3 * forward_flops(model)

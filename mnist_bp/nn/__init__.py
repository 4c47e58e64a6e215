"""The maths of backpropagation: pure computation on numpy arrays.

- `reference.py`: the forward and backward pass as plain equations, read this first; the
  fast layers below are tested against it
- `layers.py`: Linear and Dropout, and the `Layer` contract (forward, then backward under it)
- `activations.py`: ReLU, LeakyReLU, Tanh, Sigmoid, GELU
- `losses.py`: softmax + cross-entropy fused, and the quadratic cost
- `mlp.py`: the multilayer perceptron; backpropagation is its `backward`
- `optimizers.py`: SGD, momentum, Nesterov, Adam, AdamW; gradient clipping, max-norm
- `schedules.py`: the learning rate as a function of the step
- `blas.py`: fused in-place updates through numpy's own BLAS
- `products.py`: a Linear layer's three matrix products, by numpy or oneDNN, float32 or
  bfloat16
- `onednn.py`: oneDNN's GEMMs and its float32 -> bfloat16 conversion, through ctypes

Nothing here touches disk, network or the terminal: modules import only numpy, each other
and the standard library (tests/test_layout.py keeps it so).
"""

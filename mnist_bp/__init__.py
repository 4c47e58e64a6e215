"""mnist-bp: multilayer perceptrons on MNIST, trained with backpropagation written in numpy."""

__version__ = "0.1.0"

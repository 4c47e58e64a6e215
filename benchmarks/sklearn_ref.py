"""scikit-learn reference: MLPClassifier with the benchmark workload's settings, one
`partial_fit` (one epoch) at a time. Prints one JSON line with each epoch's seconds.

    python benchmarks/sklearn_ref.py --data-dir D --epochs 3
"""

import time

import numpy as np
from sklearn.neural_network import MLPClassifier

from common import report, training_set


def main():
    args, x, y = training_set(__doc__.splitlines()[0])
    clf = MLPClassifier(hidden_layer_sizes=(512, 512), solver="sgd", learning_rate_init=0.05,
                        momentum=0.9, nesterovs_momentum=False, batch_size=128, alpha=0.0,
                        shuffle=True, random_state=0)
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        clf.partial_fit(x, y, classes=np.arange(10))
        seconds.append(time.perf_counter() - start)
    report(seconds, final_loss=float(clf.loss_))


if __name__ == "__main__":
    main()

"""The tutorial's Keras model and fit, run inside the TensorFlow virtual environment.

Usage: python keras_tutorial.py DATA.npz OUT.json EPOCHS
DATA.npz holds x_train, y_train, x_val, y_val (uint8 NHWC images, int labels), written by
keras_vs_convnet.py from the same split convnet trains on.
"""
import json
import sys
import time

import numpy as np
import tensorflow as tf
from tensorflow.keras import layers, models

data_path, out_path, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = np.load(data_path)
x_train, x_val = d["x_train"] / 255.0, d["x_val"] / 255.0
y_train, y_val = d["y_train"], d["y_val"]

model = models.Sequential([
    layers.Input(shape=x_train.shape[1:]),
    layers.Conv2D(32, (3, 3), activation="relu"),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"),
    layers.Flatten(),
    layers.Dense(64, activation="relu"),
    layers.Dense(10),
])
model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
start = time.perf_counter()
history = model.fit(x_train, y_train, epochs=epochs, validation_data=(x_val, y_val), verbose=2)
fit_seconds = time.perf_counter() - start
json.dump({
    "tensorflow": tf.__version__,
    "params": int(model.count_params()),
    "fit_seconds": fit_seconds,
    "val_acc_per_epoch": [float(v) for v in history.history["val_accuracy"]],
    "val_acc": float(history.history["val_accuracy"][-1]),
}, open(out_path, "w"))

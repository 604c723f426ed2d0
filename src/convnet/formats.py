"""Names of the file formats that cross process boundaries, kept free of torch so that every
reader (the torch engine, the NumPy engine, the server) shares one spelling."""

MODEL_FORMAT = "convnet.model/1"  # model.safetensors: see engine/checkpoint.py for the layout

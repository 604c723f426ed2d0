from convnet.cli import entry_point

entry_point()

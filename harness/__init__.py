"""ubench-harness: evaluate chat vision-language models on the uBench microscopy benchmark."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ubench-harness")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

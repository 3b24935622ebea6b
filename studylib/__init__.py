"""studylib: the helpers behind the CIFAR-10 pretrained-vs-scratch study notebooks."""

__version__ = "0.1.0"

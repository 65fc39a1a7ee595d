"""selfinstruct: a human-in-the-loop studio for Self-Instruct datasets."""

__version__ = "0.1.0"

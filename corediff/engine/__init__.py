"""Training and generation: the trainer, checkpoints, run directories, sampling, commands.

Imported only by the commands that need torch (``corediff run/train/sample/degrade``).
"""

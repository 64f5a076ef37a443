"""Training: the fast step, optimizers, the epoch loop, runs and checkpoints, augmentation."""

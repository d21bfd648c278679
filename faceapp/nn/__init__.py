"""Networks: the Siamese encoder, the binary verification head, checkpoints, scorers, calibration."""

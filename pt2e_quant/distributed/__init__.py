"""Quantize across processes: calibration shards and DDP QAT on torch.distributed.

Several processes (ranks) each see part of the data; each rank's observers see only its own
share. This package merges their statistics with collectives so that every rank ends with the
same observer state, fake-quantizes with the same qparams during QAT, and converts to the same
program. Nothing here runs unless a process group is initialised.
"""

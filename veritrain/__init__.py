"""veritrain: verifiably robust training (MixTrain, Wang et al. 2018) with sound bounds and attacks."""

__version__ = "0.1.0"

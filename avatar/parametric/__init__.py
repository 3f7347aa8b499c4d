"""Parametric engine: landmark mesh warping driven by acoustic features, real time on a CPU."""

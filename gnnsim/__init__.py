"""gnnsim: learned graph simulators (MeshGraphNets, reversible processors, latent-landmark planning)."""

__version__ = "0.1.0"

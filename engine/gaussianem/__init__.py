"""GaussianEM engine: cryo-EM heterogeneity analysis with deformable 3D Gaussians."""

__version__ = "0.1.0"
